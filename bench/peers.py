"""B3: shapetrace against torchinfo, torchview and torchlens on the same model and input.

Each peer runs in its best mode: torchinfo and torchview on the meta device, torchlens (which
refuses meta) on cpu with the smallest input. Whole process is what the target is about;
in-process figures show how much of it is import and start-up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from measure import Samples, compare_calls, compare_processes, python_command
from report import Row, ratio_row, seconds_row, unavailable
from startup import PROCESS_TIMEOUT_SECONDS, shapetrace_command

CONFIGS = ((224, 2), (1024, 8))
"""(size, batch) of the reference UNet's input."""
PEER_LIMIT = 0.7
"""shapetrace, whole process, at most 0.7× the fastest peer."""
CHILD = str(Path(__file__).with_name("child.py"))
SHAPETRACE = "shapetrace"


def peer_comparison(rounds: int) -> list[Row]:
    rows: list[Row] = []
    for size, batch in CONFIGS:
        rows += _whole_process_rows(size, batch, rounds)
    for size, batch in CONFIGS:
        rows += _in_process_rows(size, batch, rounds)
    return rows


def _peer_labels() -> dict[str, str]:
    # Kept here rather than in workloads: this module must not import torch.
    return {
        "torchinfo": "torchinfo.summary (meta, depth 16)",
        "torchview": "torchview.draw_graph (meta, expand_nested)",
        "torchlens": "torchlens.trace (cpu, 32×32 b1, save=None)",
    }


def _skip_reason(peer: str, size: int) -> str | None:
    """Why a peer is left out of one configuration, or None to run it."""
    if importlib.util.find_spec(peer) is None:
        return "not installed"
    if peer == "torchlens" and size != CONFIGS[0][0]:
        # Its input is 32×32 whatever the configuration: one measurement, under the first one.
        return f"no meta; its cpu 32×32 figure is under {CONFIGS[0][0]}"
    return None


def _whole_process_rows(size: int, batch: int, rounds: int) -> list[Row]:
    where = f"{size}×{size} b{batch}, whole process"
    commands = {SHAPETRACE: shapetrace_command("unet", "--size", str(size), "--batch", str(batch))}
    skipped: list[Row] = []
    for peer, label in _peer_labels().items():
        reason = _skip_reason(peer, size)
        if reason is None:
            commands[peer] = python_command(CHILD, peer, str(size), str(batch))
        else:
            skipped.append(unavailable("B3", f"{where}: {label}", reason))
    samples = compare_processes(commands, rounds, PROCESS_TIMEOUT_SECONDS)
    rows = [seconds_row("B3", f"{where}: shapetrace unet", samples[SHAPETRACE]), *_peer_rows(where, samples)]
    return [*rows, *skipped, _fastest_peer_ratio(where, samples, PEER_LIMIT)]


def _in_process_rows(size: int, batch: int, rounds: int) -> list[Row]:
    import workloads

    from shapetrace.models.unet import UNet

    where = f"{size}×{size} b{batch}, in-process"
    meta_model = workloads.reference_model(UNet, "meta")
    contenders = {SHAPETRACE: workloads.shapetrace_call(meta_model, workloads.reference_inputs(size, batch, "meta"))}
    skipped: list[Row] = []
    for peer in workloads.PEERS:
        reason = _skip_reason(peer.name, size)
        if reason is not None:
            skipped.append(unavailable("B3", f"{where}: {_peer_labels()[peer.name]}", reason))
            continue
        model = meta_model if peer.device == "meta" else workloads.reference_model(UNet, peer.device)
        contenders[peer.name] = peer.call(model, workloads.peer_inputs(peer, size, batch))
    samples = compare_calls(contenders, rounds)
    rows = [seconds_row("B3", f"{where}: shapetrace.trace", samples[SHAPETRACE]), *_peer_rows(where, samples)]
    return [*rows, *skipped, _fastest_peer_ratio(where, samples, limit=None)]


def _peer_rows(where: str, samples: dict[str, Samples]) -> list[Row]:
    labels = _peer_labels()
    return [seconds_row("B3", f"{where}: {labels[name]}", result) for name, result in samples.items() if name in labels]


def _fastest_peer_ratio(where: str, samples: dict[str, Samples], limit: float | None) -> Row:
    peers = {name: result for name, result in samples.items() if name != SHAPETRACE and result.ok}
    if not peers:
        return unavailable("B3", f"{where}: shapetrace / fastest peer", "no peer ran", "≤ 0.7×" if limit else "")
    fastest = min(peers, key=lambda name: peers[name].median)
    target = f"≤ {limit}×" if limit is not None else ""
    measure = f"{where}: shapetrace / fastest peer ({fastest})"
    return ratio_row("B3", measure, samples[SHAPETRACE], peers[fastest], limit, target)
