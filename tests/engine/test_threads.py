"""Each process of a job gives torch its share of the node's cores by default (train/engine/threads.py); --threads
and a user's OMP_NUM_THREADS win; the run's params say what was chosen and why."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from tests.workspace import BIN, HOROVOD, Workspace, check_ok
from train.engine.threads import choose_threads, process_threads


@pytest.mark.parametrize("cores, local, threads", [(2, 2, 1), (16, 2, 8), (16, 3, 5), (2, 1, 2), (2, 4, 1)])
def test_the_cores_are_divided_among_the_nodes_processes(cores, local, threads):
    chosen = choose_threads(None, None, cores, local)
    assert chosen.count == threads
    assert chosen.source.startswith(f"{cores} cores this process may use / {local} process")


def test_threads_flag_wins_over_the_environment_and_the_division():
    assert choose_threads(3, "5", 16, 2).count == 3
    assert choose_threads(3, "5", 16, 2).source == "--threads"


@pytest.mark.parametrize("omp, threads", [("5", 5), ("4,2", 4)])
def test_omp_num_threads_wins_over_the_division(omp, threads):
    chosen = choose_threads(None, omp, 16, 2)
    assert (chosen.count, chosen.source) == (threads, f"OMP_NUM_THREADS={omp}")


@pytest.mark.parametrize("omp", ["", "0", "many"])
def test_an_omp_num_threads_that_is_no_count_is_passed_over(omp):
    assert choose_threads(None, omp, 16, 2).count == 8


def test_torchruns_own_omp_num_threads_gives_way_to_the_division(monkeypatch):
    # this test process's parent (pytest's shell) has no OMP_NUM_THREADS: the 1 is then torchrun's, as in its workers
    if "OMP_NUM_THREADS" in os.environ:
        pytest.skip("the test runner's own environment sets OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    cores = len(os.sched_getaffinity(0))
    assert process_threads(None, 1, torch.device("cpu")).count == cores
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")  # not under torchrun: the 1 is the user's
    assert process_threads(None, 1, torch.device("cpu")).source == "OMP_NUM_THREADS=1"


@pytest.mark.slow
def test_horovod_processes_share_the_cores_and_the_run_says_so(ws: Workspace):
    cores, env = len(os.sched_getaffinity(0)), {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    check_ok(ws.command([str(BIN / "horovodrun"), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable,
                         str(HOROVOD), *ws.flags(), "--device", "cpu", "--dataset", "synthetic", "--image-size", "8",
                         "--arch", "resnet-20", "--steps", "3", "--epochs", "1", "--no-system-metrics"],
                        timeout=300, env=env))
    params = ws.runs()[0].data.params
    assert params["num_threads"] == str(max(1, cores // 2))
    assert params["num_threads_source"] == f"{cores} cores this process may use / 2 processes of the job on this node"
