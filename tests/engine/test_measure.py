"""Throughput windows, data-wait share and FLOP counting, checked on loaders and models we control."""
import math
import time

import pytest
import torch
from torch import nn

from train.engine.measure import EpochTimer, auto_window_steps, full_batch_steps
from train.models import forward_flops_per_image


def batches(n_steps, batch=4, last=None, sleep=0.0):
    for i in range(n_steps):
        if sleep:
            time.sleep(sleep)
        n = last if (last and i == n_steps - 1) else batch
        yield torch.zeros(n, 1), torch.zeros(n, dtype=torch.long)


def run_epoch(timer, loader, steps, step_sleep=0.0, timed_steps=None):
    for _ in timer.iterate(loader, steps, timed_steps):
        if step_sleep:
            time.sleep(step_sleep)
    return timer.timing


def test_warmup_steps_are_excluded_and_windows_partition_the_rest():
    timer = EpochTimer(torch.device("cpu"), warmup_steps=3, window_steps=4)
    t = run_epoch(timer, batches(13, batch=4), 13)
    # steps 4..13 are timed: 10 batches of 4
    assert t.images == 10 * 4
    assert [(w.images, w.full) for w in t.windows] == [(16, True), (16, True), (8, False)]
    assert t.seconds == pytest.approx(sum(w.seconds for w in t.windows))


def test_a_short_last_batch_is_trained_but_left_out_of_the_steady_state():
    timer = EpochTimer(torch.device("cpu"), warmup_steps=3, window_steps=4)
    trained = []
    for batch in timer.iterate(batches(13, batch=4, last=2), 13, full_batch_steps(12 * 4 + 2, 4)):
        trained.append(len(batch[1]))
    t = timer.timing
    assert trained[-1] == 2 and len(trained) == 13
    # steps 4..12 are timed: 9 full batches of 4; the 13th, of 2 images, is not
    assert t.images == 9 * 4
    assert [(w.images, w.full) for w in t.windows] == [(16, True), (16, True), (4, False)]


def test_an_epoch_of_one_short_batch_is_timed_on_it():
    assert full_batch_steps(3, 4) == 1
    timer = EpochTimer(torch.device("cpu"), warmup_steps=5, window_steps=2)
    assert run_epoch(timer, batches(1, batch=3), 1, timed_steps=full_batch_steps(3, 4)).images == 3


@pytest.mark.parametrize("timed, per_window", [(6, 1), (35, 3), (200, 20), (20_000, 20)])
def test_automatic_windows_give_short_epochs_a_spread_and_cap_long_ones(timed, per_window):
    assert auto_window_steps(timed) == per_window
    timer = EpochTimer(torch.device("cpu"), warmup_steps=0, window_steps=None)
    if timed <= 200:
        t = run_epoch(timer, batches(timed), timed)
        assert len(t.windows) == -(-timed // per_window) and all(w.images == 4 * per_window for w in t.windows[:-1])


def test_epoch_shorter_than_warmup_still_times_its_last_step():
    timer = EpochTimer(torch.device("cpu"), warmup_steps=10, window_steps=5)
    t = run_epoch(timer, batches(3), 3)
    assert t.images == 4 and len(t.windows) == 1


def test_median_uses_full_windows_and_rate_is_images_over_seconds():
    timer = EpochTimer(torch.device("cpu"), warmup_steps=0, window_steps=2)
    t = run_epoch(timer, batches(5), 5, step_sleep=0.01)
    assert len(t.windows) == 3 and not t.windows[-1].full
    rates = sorted(w.images / w.seconds for w in t.windows[:2])
    assert t.median_images_per_sec == pytest.approx(sum(rates) / 2)
    assert t.images_per_sec == pytest.approx(t.images / t.seconds)


def test_data_wait_share_reflects_a_slow_loader():
    timer = EpochTimer(torch.device("cpu"), warmup_steps=1, window_steps=3)
    slow = run_epoch(timer, batches(7, sleep=0.02), 7)
    fast = run_epoch(timer, batches(7), 7, step_sleep=0.02)
    assert slow.data_wait_frac > 0.8
    assert fast.data_wait_frac < 0.2


def test_flops_of_a_conv_and_a_linear_layer_are_counted_exactly():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    macs = 8 * 3 * 9 * 32 * 32 + 8 * 32 * 32 * 10
    assert forward_flops_per_image(model, 32) == 2 * macs


def test_flop_counting_leaves_batchnorm_statistics_and_mode_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = model[1].running_mean.clone()
    forward_flops_per_image(model, 16)
    assert model.training and torch.equal(model[1].running_mean, before)


def test_spread_needs_two_windows():
    timer = EpochTimer(torch.device("cpu"), warmup_steps=0, window_steps=10)
    assert math.isnan(run_epoch(timer, batches(4), 4).spread_pct)
    assert run_epoch(timer, batches(20), 20).spread_pct >= 0
