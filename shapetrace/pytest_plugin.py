"""shapetrace's pytest plugin: the `shapetrace` fixture and the --shapetrace-update option.

Loaded through the `pytest11` entry point, whose name is this module's, so that `-p
shapetrace.pytest_plugin` and the entry point register it once (`-p no:shapetrace.pytest_plugin`
turns it off). It imports neither torch nor shapetrace.testing until a test asks for the fixture:
every pytest run in an environment with shapetrace installed loads it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

UPDATE_OPTION = "--shapetrace-update"

update_requested = False
"""True while a pytest run with --shapetrace-update is configured; shapetrace.testing reads it."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shapetrace")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="Write or rewrite the golden traces of shapetrace's assert_trace_matches instead of comparing.",
    )


_BEFORE = pytest.StashKey[bool]()
"""The flag as the run found it: a pytest run inside another (pytester) puts it back."""


def pytest_configure(config: pytest.Config) -> None:
    global update_requested  # noqa: PLW0603 - one flag per configured run, read by shapetrace.testing
    config.stash[_BEFORE] = update_requested
    update_requested = bool(config.getoption(UPDATE_OPTION))


def pytest_unconfigure(config: pytest.Config) -> None:
    global update_requested  # noqa: PLW0603
    update_requested = config.stash.get(_BEFORE, False)


@pytest.fixture
def shapetrace() -> ModuleType:
    """The `shapetrace.testing` module: `shapetrace.assert_aligned(...)`, `shapetrace.assert_trace_matches(...)`."""
    return _testing()


def _testing() -> ModuleType:
    return importlib.import_module("shapetrace.testing")
