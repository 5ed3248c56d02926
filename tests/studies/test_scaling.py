"""``cnnbench scaling``: per world size, the job's images/s and efficiency with intervals, and the step-time split."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.studies.test_suite import cnnbench
from train.engine.schema import TRAIN_IMAGES_PER_SEC
from train.studies.scaling import point_figures

PARTS = {"step_time_ms": 100.0, "data_wait_ms": 10.0, "forward_ms": 30.0, "backward_ms": 40.0,
         "allreduce_exposed_ms": 15.0, "optimizer_ms": 5.0}


def job(images_per_sec: float, tags: dict | None = None, **parts) -> tuple:
    """A job's run as _study_runs gives it: the run, and its one images/s (train_images_per_sec)."""
    metrics = {**PARTS, TRAIN_IMAGES_PER_SEC: images_per_sec, **parts}
    run = SimpleNamespace(data=SimpleNamespace(metrics=metrics, tags=tags or {}))
    return run, [images_per_sec]


def test_efficiency_is_the_rate_at_n_over_n_times_the_rate_at_1_with_its_interval():
    single = [job(100.0), job(100.0)]
    two = [job(180.0, data_wait_ms=20.0),
           job(180.0, data_wait_ms=30.0, tags={"cnnbench.straggler": "epoch 2: rank 1 ..."})]
    point = point_figures(two, 2, single)
    assert (point["images/s"].estimate, point["images/s"].low, point["images/s"].high) == (180.0, 180.0, 180.0)
    assert vars(point["efficiency"]) == pytest.approx({"estimate": 0.9, "low": 0.9, "high": 0.9})
    assert point["data wait"] == 25.0 and point["compute"] == 70.0 and point["exposed all-reduce"] == 15.0
    assert point["runs"] == 2 and point["stragglers"] == ["epoch 2: rank 1 ..."]


def test_runs_that_vary_give_an_interval_around_the_efficiency():
    single = [job(rate) for rate in (95.0, 100.0, 105.0)]
    two = [job(rate) for rate in (170.0, 180.0, 190.0)]
    efficiency = point_figures(two, 2, single)["efficiency"]
    assert efficiency.estimate == pytest.approx(0.9, rel=1e-3)  # the ratio of geometric means
    assert efficiency.low < 0.9 < efficiency.high


def test_world_sizes_without_1_are_one_line_and_exit_2(capsys):
    code, out, err = cnnbench(capsys, "scaling", "--world-sizes", "2", "4", "--", "--epochs", "1")
    assert code == 2 and err == "cnnbench: error: --world-sizes must include 1: efficiency is rate(N) / (N x rate(1))\n"
