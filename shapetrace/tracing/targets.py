"""Find and build the model a `shapetrace trace TARGET` names.

TARGET is `package.module:attr` or `path/to/file.py:attr`; attr is an nn.Module class, a
factory function, or a module instance. Every failure is a TargetError naming the value.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shapetrace.errors import TargetError
from shapetrace.tracing.closures import deep_copy


def load_attribute(target: str) -> Any:
    """The object `target` names."""
    location, separator, attribute = target.rpartition(":")
    if not separator or not location or not attribute.replace(".", "").replace("_", "").isalnum():
        raise TargetError(f"TARGET {target!r} is malformed: expected package.module:attr or path/to/file.py:attr")
    module = _import_file(location) if location.endswith(".py") else _import_module(location)
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise TargetError(f"TARGET {target!r}: {location} has no attribute {attribute!r}")
        value = getattr(value, part)
    return value


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise TargetError(f"cannot import {name!r}: {error}") from None
    except Exception as error:  # noqa: BLE001 - the user's module raising at import is their bug, told in one line
        raise TargetError(f"importing {name!r} raised {type(error).__name__}: {error}") from None


def _import_file(path_text: str) -> Any:
    path = Path(path_text)
    if not path.is_file():
        raise TargetError(f"cannot import {path_text!r}: no such file")
    name = f"_shapetrace_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path_text!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    sys.path.insert(0, str(path.parent.resolve()))  # sibling imports, as `python file.py` allows
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the user's file raising at import is reported in one line
        raise TargetError(f"importing {path_text!r} raised {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def build_model(target: str, init: dict[str, Any], device: torch.device) -> nn.Module:
    """Build (or move) the TARGET's model on `device`; on meta no weights are allocated."""
    value = load_attribute(target)
    if isinstance(value, nn.Module):
        if init:
            raise TargetError(f"TARGET {target!r} is a module instance: --init applies only to a class or factory")
        # A copy: the user's own instance must not move to meta (or anywhere) behind their back.
        return deep_copy(value).to(device)
    if not callable(value):
        raise TargetError(
            f"TARGET {target!r} is a {type(value).__name__}, expected an nn.Module class, factory or instance"
        )
    model = _construct(target, value, init, device)
    if not isinstance(model, nn.Module):
        raise TargetError(f"TARGET {target!r} returned a {type(model).__name__}, expected an nn.Module")
    return model


def _construct(target: str, factory: Callable[..., Any], init: dict[str, Any], device: torch.device) -> Any:
    try:
        inspect.signature(factory).bind(**init)
    except TypeError as error:
        raise TargetError(f"--init does not fit {target!r}: {error}") from None
    except ValueError:
        pass  # builtins without a signature: let the call decide
    try:
        with torch.device(device):
            return factory(**init)
    except Exception as error:  # noqa: BLE001 - a constructor that raises is reported in one line
        raise TargetError(f"building {target!r} raised {type(error).__name__}: {error}") from None
