"""The figures of a multi-process job are the job's: computed on two real gloo ranks, checked against arithmetic.

Each case gives the two ranks different timings, statistics or random streams, where a figure that is rank 0's
(times the world size) and the job's figure differ.
"""
from __future__ import annotations

import math

import pytest
import torch

from tests.engine.two_ranks import on_two_ranks
from train.engine import loop
from train.engine.measure import EpochTiming, Window

# rank 0 is fast and steady; rank 1 is slower and slows down: the job waits for rank 1 in every window
TIMINGS = [
    EpochTiming(images=40, seconds=4.0, data_wait=0.4, epoch_seconds=5.0,
                windows=[Window(20, 2.0, True), Window(20, 2.0, True)]),
    EpochTiming(images=40, seconds=12.0, data_wait=6.0, epoch_seconds=13.0,
                windows=[Window(20, 4.0, True), Window(20, 8.0, True)]),
]


def job_throughput(dist, skipped: float) -> tuple[dict, list[float], tuple[int, float], float]:
    timing = TIMINGS[dist.ctx.rank]
    return loop._job_throughput(timing, torch.tensor(skipped, dtype=torch.float64), dist)


@pytest.fixture(scope="module")
def figures():
    return on_two_ranks(job_throughput, 3.0)  # each rank's scaler skipped the same 3 steps


def test_every_rank_gets_the_same_job_figures(figures):
    rank0, rank1 = figures
    assert rank0[:3] == rank1[:3]
    assert math.isnan(rank0[3]) and math.isnan(rank1[3])  # the epoch's GPU energy: no counter on CPU, on any rank


def test_an_epochs_images_per_second_is_all_images_over_the_slowest_ranks_seconds(figures):
    (m, _, steady, _), _ = figures
    assert m["epoch_images_per_sec"] == 80 / 12.0
    assert steady == (80, 12.0)  # what the run's train_images_per_sec adds up over its epochs
    assert m["data_wait_frac"] == (0.4 + 6.0) / (4.0 + 12.0)
    assert m["epoch_time_s"] == 13.0


def test_window_median_and_spread_are_over_the_jobs_windows_not_rank_0s_times_the_world(figures):
    (m, rates, _, _), _ = figures
    # job window k: both ranks' images of it over the slower rank's seconds: 40 / 4 s, 40 / 8 s
    assert rates == [10.0, 5.0]
    assert m["epoch_images_per_sec_spread"] == pytest.approx(100 * (10.0 - 5.0) / 7.5)


def test_fp16_skipped_steps_are_counted_once_not_once_per_rank(figures):
    (m, _, _, _), _ = figures
    assert m["amp_skipped_steps"] == 3


def dropout_masks(dist, seed: int, epoch: int) -> list[torch.Tensor]:
    masks = []
    for _ in range(2):  # the epoch, then the same epoch again, as a resumed run reruns it
        loop._seed_epoch(seed, epoch, dist.ctx.rank)
        masks.append(torch.nn.functional.dropout(torch.ones(1000), p=0.5))
    return masks


def test_ranks_draw_different_dropout_masks_and_a_rerun_epoch_draws_the_same():
    (first0, again0), (first1, again1) = on_two_ranks(dropout_masks, 7, 3)
    assert torch.equal(first0, again0) and torch.equal(first1, again1)
    assert not torch.equal(first0, first1)


def buffers_after_broadcast(dist) -> list[torch.Tensor]:
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(dist.ctx.rank + 1.0)  # each rank's own statistics, as after a DDP epoch
    bn.num_batches_tracked.fill_(10 * (dist.ctx.rank + 1))
    dist.broadcast_buffers(bn)
    return [bn.running_mean, bn.num_batches_tracked]


def test_ranks_evaluate_with_rank_0s_batchnorm_statistics():
    rank0, rank1 = on_two_ranks(buffers_after_broadcast)
    for mine, theirs in zip(rank0, rank1):
        assert torch.equal(mine, theirs)
    assert torch.equal(rank1[0], torch.ones(3)) and rank1[1].item() == 10
