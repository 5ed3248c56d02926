"""Under load and faults: concurrent jobs log to the project's PostgreSQL-backed tracking server while it is
SIGKILLed and started again twice (``benchmarks/tracking_load.py``, whose audit this test reads). Three jobs, one
of them DDP with 2 ranks, instead of the script's eight: the whole suite shares 2 CPU cores."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from benchmarks.tracking_load import run_load


@pytest.mark.slow
def test_jobs_logging_through_two_server_restarts_leave_a_whole_record():
    # PostgreSQL runs as `postgres` when we are root: its folder must not sit under pytest's private tmp
    root = Path(tempfile.mkdtemp(prefix="cnnbench-load-"))
    try:
        load = run_load(jobs=3, ddp_jobs=1, epochs=3, restarts=2, root=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # problems: a job without exactly one FINISHED run, an epoch metric missing or twice, a run-level figure
    # missing, an outbox file left, ./mlruns in the jobs' working directory, a job that failed or ended too soon
    assert load.problems == []
    assert (load.lost, load.duplicated) == (0, 0)
    assert len(load.downtimes) == 2 and load.retried > 0  # both restarts happened while writes were being made
