"""Time to accuracy: the first epoch at or below --target-top1-err, on every launcher, on real data (digits).

alexnet has neither BatchNorm nor dropout, so the three launchers train the same net on the same global batches and
reach the target at the same epoch; with --stop-at-target each run ends there, FINISHED.
"""
from __future__ import annotations

import math

import pytest

from tests.workspace import Workspace, check_ok

pytestmark = pytest.mark.slow

TARGET = 50.0  # % top-1 error: alexnet at lr 0.02 passes it at epoch 3 (about 70, 58, 23 %)
FLAGS = ["--arch", "alexnet", "--dataset", "digits", "--lr", "0.02", "--epochs", "6", "--seed", "0",
         "--target-top1-err", str(TARGET), "--stop-at-target", "--no-system-metrics"]
DIGITS_TRAIN = 1347


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Workspace, dict]:
    ws = Workspace(tmp_path_factory.mktemp("ttt"))
    check_ok(ws.launch(*FLAGS, "--batch-size", "32", "--threads", "1", "--experiment", "single"))
    check_ok(ws.torchrun(2, *FLAGS, "--global-batch-size", "32", "--experiment", "ddp"))
    check_ok(ws.horovodrun(2, *FLAGS, "--batch-size", "16", "--experiment", "horovod"))
    return ws, {name: ws.runs(name)[0] for name in ("single", "ddp", "horovod")}


def test_every_launcher_reaches_the_target_at_the_same_epoch_and_stops_there(runs):
    ws, by_launcher = runs
    epochs = {name: run.data.metrics["epochs_to_target"] for name, run in by_launcher.items()}
    assert len(set(epochs.values())) == 1, epochs
    reached = int(epochs["single"])
    for name, run in by_launcher.items():
        errors = [m.value for m in ws.history(run.info.run_id, "val_top1_err")]
        assert len(errors) == reached and errors[-1] <= TARGET < min(errors[:-1]), (name, errors)
        assert run.info.status == "FINISHED"
        assert run.data.tags["cnnbench.end"] == f"reached the target at epoch {reached} of 6 (--stop-at-target)"
        assert run.data.tags["cnnbench.target"].startswith(f"reached at epoch {reached} after ")
        assert run.data.params["target_top1_err"] == str(TARGET) and run.data.params["stop_at_target"] == "True"


@pytest.mark.parametrize("launcher, world", [("single", 1), ("ddp", 2), ("horovod", 2)])
def test_time_to_target_counts_training_and_evaluation_apart(runs, launcher, world):
    ws, by_launcher = runs
    run = by_launcher[launcher]
    m, reached = run.data.metrics, int(run.data.metrics["epochs_to_target"])

    def total(metric: str) -> float:
        return sum(v.value for v in ws.history(run.info.run_id, metric) if v.step <= reached)

    assert m["train_time_to_target_s"] == pytest.approx(total("epoch_time_s"), rel=1e-9)
    assert m["eval_time_to_target_s"] == pytest.approx(total("eval_time_s"), rel=1e-9)
    assert m["time_to_target_s"] > m["train_time_to_target_s"] + m["eval_time_to_target_s"]  # MLPerf's clock
    # every rank trains on an equal share: the sampler pads the odd image count up to a multiple of the world size
    assert m["images_to_target"] == reached * world * math.ceil(DIGITS_TRAIN / world)


def test_a_target_never_reached_is_said_plainly(ws):
    check_ok(ws.launch("--arch", "alexnet", "--dataset", "digits", "--lr", "0.02", "--epochs", "1", "--threads", "1",
                       "--target-top1-err", "1"))
    (run,) = ws.runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags["cnnbench.target"].startswith("not reached in 1 epochs: best top-1 error ")
    assert run.data.tags["cnnbench.target"].endswith(" % > 1 %")
    assert "time_to_target_s" not in run.data.metrics


@pytest.mark.parametrize("flags, message", [
    (["--stop-at-target"], "--stop-at-target needs --target-top1-err"),
    (["--target-top1-err", "120"], "--target-top1-err 120 is an error in %"),
])
def test_bad_targets_are_refused_in_one_line(ws, flags, message):
    proc = ws.launch(*flags)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert message in proc.stderr
