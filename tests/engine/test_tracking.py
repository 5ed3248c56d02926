"""The tracker writes only names the schema declares, and every run it closes says how it ended."""
import pytest

from train.engine.outbox import END_TAG
from train.engine.schema import METRICS, PARAMS
from train.engine.tracking import MlflowTracker, NullTracker
from train.errors import UsageError


@pytest.fixture
def tracker(tmp_path):
    return MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "schema-test")


def test_undeclared_names_are_refused(tracker):
    with tracker.run("run", {"arch": "resnet-20"}, {"arch": "resnet-20"}):
        with pytest.raises(ValueError, match="not declared"):
            tracker.log_metrics({"val_acc": 90.0}, step=1)
        with pytest.raises(ValueError, match="not declared"):
            tracker.log_metrics({"train_loss": 1.0}, step=0)  # an epoch metric logged as a run metric
        with pytest.raises(ValueError, match="not declared"):
            tracker.log_params({"learning_rate": 0.1})
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("exc,status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt("signal 15"), "KILLED")])
def test_the_run_is_closed_with_the_status_of_how_it_ended(tracker, exc, status):
    with pytest.raises(type(exc)):
        with tracker.run("run", {}, {}):
            raise exc
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == status and run.data.tags[END_TAG]


def test_an_interrupt_while_the_run_is_being_opened_still_closes_it(tracker, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(MlflowTracker, "log_params", interrupted)  # lands right after the run is created
    with pytest.raises(KeyboardInterrupt):
        with tracker.run("run", {"arch": "x"}, {}):
            pass
    assert tracker.client.get_run(tracker.run_id).info.status == "KILLED"


def test_schema_names_are_unique_and_units_given():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) and all(m.unit and m.step in ("epoch", "run", "batch_size") for m in METRICS)
    assert len({p.name for p in PARAMS}) == len(PARAMS)


def test_an_unusable_store_is_one_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot use MLflow tracking store"):
        with MlflowTracker(f"sqlite:///{blocker}/sub/mlflow.db", "x").run("run", {}, {}):
            pass


def test_null_tracker_takes_the_same_calls():
    t = NullTracker()
    with t.run("run", {"arch": "x"}, {}) as end:
        t.log_metrics({"anything": 1}, step=1)
        assert end.status == "FINISHED" and t.run_id is None


def test_schema_has_every_name_the_foundation_promises():
    params = {"arch", "dataset", "framework", "launcher", "world_size", "batch_size", "global_batch_size", "epochs",
              "lr", "weight_decay", "precision", "channels_last", "loader", "device", "torch_version", "git_sha"}
    epoch = {"train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "train_images_per_sec",
             "epoch_time_s", "data_wait_frac"}
    run = {"num_params", "flops_per_image", "best_val_top1_err", "peak_mem_mb"}
    assert params <= {p.name for p in PARAMS}
    assert epoch <= {m.name for m in METRICS if m.step == "epoch"}
    assert run <= {m.name for m in METRICS if m.step == "run"}
