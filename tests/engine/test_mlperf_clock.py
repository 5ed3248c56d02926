"""time_to_target_s as MLPerf Training counts it: the wall clock from run start (before the data set is touched) to
the end of the evaluation that reaches the target, never paused; training alone apart, start-up apart.

One in-process run of resnet-20 on digits, 4 steps per epoch, two epochs; the validation errors are injected (90 %,
then 10 %, against a 50 % target) so the target is reached at epoch 2, after a checkpoint and the logging of epoch 1;
the run clock's readings are recorded, as are the moments the data loaders were built and the evaluations ended.
"""
from __future__ import annotations

import time

import pytest

from launchers import single
from tests.workspace import Workspace
from train.engine import loop

FLAGS = ["--arch", "resnet-20", "--dataset", "digits", "--steps", "4", "--batch-size", "32", "--epochs", "2",
         "--target-top1-err", "50", "--threads", "1", "--no-system-metrics"]
INJECTED_ERRORS = [90.0, 10.0]  # % top-1: epoch 1 misses the target, epoch 2 reaches it


@pytest.fixture(scope="module")
def clocked_run(tmp_path_factory):
    """The run's MLflow record and the moments observed: ("clock", t) for every reading of the run clock,
    ("data", t) when the loaders were built, ("evaluated", t) when an evaluation ended."""
    ws = Workspace(tmp_path_factory.mktemp("clock"))
    events = []

    def observed(kind: str, real):
        def call(*args, **kwargs):
            if kind == "data":
                events.append((kind, time.perf_counter()))
            result = real(*args, **kwargs)
            if kind == "evaluated":
                result = {**result, "val_top1_err": INJECTED_ERRORS[len([e for e in events if e[0] == kind])]}
                events.append((kind, time.perf_counter()))
            return result
        return call

    def clock_reading() -> float:
        events.append(("clock", time.perf_counter()))
        return events[-1][1]

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ws.root)
        patch.setattr(loop, "build_loaders", observed("data", loop.build_loaders))
        patch.setattr(loop, "evaluate", observed("evaluated", loop.evaluate))
        from train.engine.measure import RunClock  # imported here: the old code has no run clock to watch

        patch.setattr(RunClock, "now", staticmethod(clock_reading))
        assert single.main([*ws.flags(), *FLAGS]) == 0
    (run,) = ws.runs()
    return ws, run, events


def test_time_to_target_counts_evaluation_and_what_lies_between_epochs(clocked_run):
    ws, run, _ = clocked_run
    m = run.data.metrics
    epochs = [v.value for v in ws.history(run.info.run_id, "epoch_time_s")]
    evals = [v.value for v in ws.history(run.info.run_id, "eval_time_s")]
    assert m["epochs_to_target"] == 2 and run.data.tags["cnnbench.target"].startswith("reached at epoch 2 after ")
    assert m["time_to_target_s"] > sum(epochs) + sum(evals)  # the clock was not paused between them
    assert m["train_time_to_target_s"] == pytest.approx(sum(epochs), rel=1e-12)  # training alone, named so
    assert m["eval_time_to_target_s"] == pytest.approx(sum(evals), rel=1e-12)
    assert m["startup_time_s"] > 0


def test_time_to_target_is_the_run_clock_from_before_the_data_to_the_target_evaluations_end(clocked_run):
    _, run, events = clocked_run
    clock = [t for kind, t in events if kind == "clock"]
    data = next(t for kind, t in events if kind == "data")
    target_evaluated = [t for kind, t in events if kind == "evaluated"][1]
    run_start = clock[0]
    stopped = next(t for t in clock if t >= target_evaluated)  # the first reading after the target's evaluation
    assert run_start <= data  # the clock runs before the data set is touched
    assert [kind for kind, _ in events] == ["clock", "data", "evaluated", "clock", "evaluated", "clock"]
    assert run.data.metrics["time_to_target_s"] == stopped - run_start
