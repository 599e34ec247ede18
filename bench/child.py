"""A peer tool as a whole process, as the benchmark runs it: `python bench/child.py torchinfo 224 2`.

The child does what a user's script would: import, build the reference UNet, run the tool
once, print its output. The parent times it from outside.
"""

from __future__ import annotations

import argparse


def run_peer(name: str, size: int, batch: int) -> None:
    """Build the reference UNet and run one peer tool on it, printing what the tool prints."""
    import workloads

    peer = next(peer for peer in workloads.PEERS if peer.name == name)
    model = workloads.reference_model(workloads.load_unet_class(), peer.device)
    result = peer.call(model, workloads.peer_inputs(peer, size, batch))()
    print(peer.printed(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=["torchinfo", "torchview", "torchlens"])
    parser.add_argument("size", type=int, help="Input height and width.")
    parser.add_argument("batch", type=int)
    arguments = parser.parse_args()
    run_peer(arguments.peer, arguments.size, arguments.batch)


if __name__ == "__main__":
    main()
