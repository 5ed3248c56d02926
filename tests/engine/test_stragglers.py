"""A rank slower than the median rank by more than the job's timing noise is named, with its host and excess
(train/engine/stragglers.py): the rule on recorded figures of both kinds, the per-rank figures on two real gloo
ranks, and real 2-rank jobs where one rank shares its core with a busy neighbour, and where none does."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from benchmarks._processes import free_port, kill_tree
from tests.engine.two_ranks import on_two_ranks
from tests.workspace import DDP, Workspace
from train.engine.breakdown import StepBreakdown
from train.engine.distributed import gather_hostnames
from train.engine.measure import EpochTiming
from train.engine.stragglers import FLOOR, TAG, describe, find_stragglers, noise_bound

# Recorded figures (busy_ms of ranks 0 and 1; the epoch's window images/s) of the real jobs of the last test, on a
# 2-core machine shared with six other sessions' work (load average 8.0 to 8.6): rank 1 at nice 10 beside a busy
# loop on its core, and an even job
NEIGHBOUR_ON_RANK_1 = ([501.0, 2837.2], [9.6, 9.5, 9.3, 10.2, 9.2, 18.1, 18.8, 18.7, 15.1, 12.1])
EVEN = ([309.6, 335.1], [93.2, 85.0, 76.1, 74.1, 91.2, 93.6, 72.1, 89.2, 83.8, 100.2])


def test_a_rank_slower_than_the_median_rank_by_more_than_the_window_noise_is_named():
    (found,) = find_stragglers(*NEIGHBOUR_ON_RANK_1)
    assert found.rank == 1
    assert found.excess == pytest.approx(2837.2 / 501.0 - 1)
    assert found.bound == pytest.approx((17.35 - 9.525) / 11.15)  # quartiles and median of the ten windows


def test_an_even_job_names_no_rank():
    # rank 1 is 8 % slower than rank 0: within the 10 % floor and the windows' interquartile range (17 %)
    assert find_stragglers(*EVEN) == []


def test_an_excess_within_the_window_noise_is_noise():
    windows = [70.0, 80.0, 100.0, 110.0, 120.0]  # quartiles 80 and 110 around 100: noise 30 %
    assert noise_bound(windows) == pytest.approx(0.30)
    assert find_stragglers([100.0, 100.0, 129.0], windows) == []
    assert [s.rank for s in find_stragglers([100.0, 100.0, 131.0], windows)] == [2]


def test_steady_windows_still_need_the_floor():
    steady = [100.0, 101.0, 102.0]
    assert noise_bound(steady) == FLOOR and noise_bound([100.0]) == FLOOR
    assert find_stragglers([100.0, 109.0], steady) == []
    assert [s.rank for s in find_stragglers([100.0, 111.0], steady)] == [1]


def test_the_median_rank_is_a_rank_and_several_stragglers_come_slowest_first():
    found = find_stragglers([10.0, 30.0, 10.0, 20.0, 10.0], [])
    assert [(s.rank, s.excess) for s in found] == [(1, 2.0), (3, 1.0)]


def test_ranks_without_a_figure_are_left_out():
    assert find_stragglers([100.0, math.nan], []) == []
    assert [s.rank for s in find_stragglers([100.0, math.nan, 100.0, 150.0], [])] == [3]


def test_the_tag_names_rank_host_excess_and_bound():
    text = describe(find_stragglers(*NEIGHBOUR_ON_RANK_1), ["node-a", "node-b"], 1)
    assert text == ("epoch 1: rank 1 on node-b: own step time 466 % above the median rank's (noise bound 70 %: "
                    "max(1 x the interquartile range / median of the timing windows' images/s, 10 %))")


def per_rank_busy(dist) -> tuple[dict, list[str]]:
    """Rank r's sampled steps take 10 * (r + 1) ms of forward and 5 ms of all-reduce wait."""
    breakdown = StepBreakdown(torch.device("cpu"), every=1, warmup_steps=0)
    ticks = iter(range(1000))
    breakdown.clock.now = lambda: next(ticks) * 0.001  # a clock that advances 1 ms per mark
    for _ in breakdown.iterate(range(4), 4):
        for _ in range(10 * (dist.ctx.rank + 1) - 1):
            next(ticks)
        breakdown.mark("forward")
        for _ in range(4):
            next(ticks)
        breakdown.mark("allreduce_exposed")
    return breakdown.summary(dist, EpochTiming(seconds=1.0)), gather_hostnames(dist)


def test_each_rank_logs_its_own_step_time_without_the_all_reduce_wait():
    (m0, hosts0), (m1, _) = on_two_ranks(per_rank_busy)
    assert m0 == m1
    # data wait 1 ms (one mark after the step's start) + forward 10 or 20 ms; the 5 ms of all-reduce left out
    assert (m0["busy_ms_rank0"], m0["busy_ms_rank1"]) == pytest.approx((11.0, 21.0))
    assert (m0["allreduce_exposed_ms"], m0["forward_ms"]) == pytest.approx((5.0, 15.0))
    assert hosts0 == [os.uname().nodename] * 2


def two_ranks(ws: Workspace, neighbour: bool):
    """Two ranks of launchers/ddp.py started as torchrun would. With ``neighbour``, rank r is pinned to core r and
    rank 1 shares its core with a busy loop, at a lower priority (nice 10: about a tenth of the neighbour's share,
    whatever else the machine runs); without, both ranks run at the same priority where the kernel puts them."""
    port, env = free_port(), {**os.environ, "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    busy = [subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])] if neighbour else []
    placed = [["taskset", "-c", "0"], ["nice", "-n", "10", "taskset", "-c", "1"]] if neighbour else [[], []]
    ranks = [subprocess.Popen([*placed[rank], sys.executable, str(DDP), *ws.flags(), "--device", "cpu", "--threads",
                               "1", "--arch", "resnet-20", "--batch-size", "16", "--steps", "15", "--epochs", "1",
                               "--breakdown-every", "1", "--no-system-metrics",
                               "--experiment", f"neighbour-{neighbour}"],
                              cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**env, "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank)})
             for rank in range(2)]
    try:
        errors = [proc.communicate(timeout=600)[1] for proc in ranks]
    finally:
        for proc in ranks + busy:
            kill_tree(proc.pid)
    assert [proc.returncode for proc in ranks] == [0, 0], errors[0][-2000:]
    (run,) = ws.runs(f"neighbour-{neighbour}")
    return run


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin the ranks to")
def test_a_rank_beside_a_busy_neighbour_is_tagged_and_an_even_job_is_not(ws):
    slowed, even = two_ranks(ws, neighbour=True), two_ranks(ws, neighbour=False)
    assert slowed.data.tags[TAG].startswith(f"epoch 1: rank 1 on {os.uname().nodename}: own step time ")
    assert "rank 0" not in slowed.data.tags[TAG]
    assert TAG not in even.data.tags, even.data.tags[TAG]
