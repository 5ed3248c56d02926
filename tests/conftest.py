"""Suite-wide rules: tests marked ``gpu`` skip themselves where CUDA is absent; ``ws`` is a fresh workspace; every
test has a hard time limit, past which it fails and every process it started is killed, so no hang can eat CI's
budget."""
import signal
import time

import psutil
import pytest
import torch

from tests.workspace import Workspace, kill_tree

HARD_LIMIT_S = {"slow": 1200, "other": 300}  # per test, setup and teardown included: far above what they take


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """A temp dir with its own sqlite MLflow store and checkpoint folder."""
    return Workspace(tmp_path)


class HardTimeout(Exception):
    """A test ran past its hard limit."""


def _started_processes() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item.hard_deadline = time.monotonic() + HARD_LIMIT_S["slow" if "slow" in item.keywords else "other"]
    item.processes_before = _started_processes()
    yield from _within_deadline(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _within_deadline(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _within_deadline(item)


def _within_deadline(item):
    """Run one phase of the test under an alarm at the test's deadline; at the alarm, kill what the test started
    (its waits on them return) and fail it."""
    limit = HARD_LIMIT_S["slow" if "slow" in item.keywords else "other"]

    def expired(signum, frame):
        for pid in _started_processes() - item.processes_before:
            kill_tree(pid)
        raise HardTimeout(f"{item.nodeid} ran past its hard limit of {limit} s: stopped, its processes killed")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, item.hard_deadline - time.monotonic()))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
