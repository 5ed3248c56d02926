"""One run, one training images/s: the summary, the MLflow metric, the throughput report and ``cnnbench compare``
show the same number (``train.engine.schema.TRAIN_IMAGES_PER_SEC``); and one val error (``VAL_ERROR``).

A real in-process run on tiny synthetic data: two epochs of four one-step timing windows each, whose wall times are
scripted (``script_window_seconds``) so that the run's steady-state images / seconds (its figure), the last epoch's
and the median window are three different numbers.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import statistics

import pytest
from mlflow import MlflowClient

from launchers import single
from tests.engine.test_resume import script_window_seconds
from tests.studies.test_compare import rows_of
from tests.studies.test_report import table
from tests.studies.test_suite import cnnbench
from tests.workspace import Workspace
from train.engine.schema import TRAIN_IMAGES_PER_SEC, VAL_ERROR
from train.studies.figures import percent, significant
from train.studies.report import REPORT_TAG
from train.studies.reports.common import FLAG_MARK

TINY = ["--dataset", "synthetic", "--image-size", "32", "--num-classes", "10", "--synthetic-train-size", "64",
        "--synthetic-val-size", "32", "--batch-size", "16", "--warmup-steps", "0", "--window-steps", "1",
        "--threads", "1", "--epochs", "2", "--no-system-metrics", "--experiment", "one"]


SECONDS = [1.0, 1.0, 1.0, 4.0, 1.0, 1.0, 2.0, 4.0]  # the 8 windows of 16 images each: 16, 16, 16, 4, 16, 16, 8, 4 /s


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """The run, its printed summary, its MLflow record, and the id of a planted run of the same data set in another
    experiment (compare takes two different runs; the run alone is side A)."""
    ws = Workspace(tmp_path_factory.mktemp("one"))
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.chdir(ws.root)
        script_window_seconds(patch, SECONDS)
        assert single.main([*ws.flags(), *TINY]) == 0
    (run,) = [r for r in ws.runs("one") if REPORT_TAG not in r.data.tags]
    return ws, printed.getvalue(), run, planted_run(ws, run)


def planted_run(ws: Workspace, like) -> str:
    """A FINISHED training run on the data set of ``like`` (whose errors compare will set beside it)."""
    from mlflow.entities import Metric, Param

    client = MlflowClient(ws.uri)
    run_id = client.create_run(client.create_experiment("other")).info.run_id
    client.log_batch(run_id, metrics=[Metric(TRAIN_IMAGES_PER_SEC, 100.0, 0, 0), Metric(VAL_ERROR, 50.0, 0, 0)],
                     params=[Param(key, like.data.params[key]) for key in ("dataset", "val_size")])
    client.set_terminated(run_id)
    return run_id


def summary_row(summary: str, name: str) -> str:
    return re.search(rf"^  {name}\s+(.*)$", summary, re.MULTILINE)[1]


def test_summary_mlflow_report_and_compare_show_one_images_per_second(one_run, tmp_path, capsys):
    ws, summary, run, other = one_run
    logged = run.data.metrics[TRAIN_IMAGES_PER_SEC]
    windows = [m.value for m in ws.history(run.info.run_id, "train_images_per_sec_window")]
    assert windows == [16 / s for s in SECONDS]
    assert logged == 8 * 16 / sum(SECONDS)  # 8.53: every steady-state image over every steady-state second
    assert statistics.median(windows) == 16.0 and run.data.metrics["epoch_images_per_sec"] == 8.0  # not these
    assert summary_row(summary, "train images/s").startswith(f"{logged:.1f} (")

    code, _, _ = cnnbench(capsys, "report", "throughput", "--experiment", "one", "--out", str(tmp_path),
                          "--tracking-uri", ws.uri)
    (row,) = table((tmp_path / "throughput.md").read_text(), "arch")
    assert code == 0 and row["images/s"].removesuffix(f" {FLAG_MARK}") == significant(logged)  # noisy CPU windows

    code, out, _ = cnnbench(capsys, "compare", "--a-runs", run.info.run_id, "--b-runs", other,
                            "--metric", "images/s", "val-error", "--tracking-uri", ws.uri)
    assert code == 0 and rows_of(out)["images/s"]["A: median [95 % CI]"] == f"{significant(logged)} (1 run)"
    record = compare_record(ws, out)
    assert record["metrics"]["images/s"]["a"]["estimate"] == logged  # the number itself, not only its print


def test_one_val_error_the_final_epochs_and_the_best_named_apart(one_run, tmp_path, capsys):
    ws, summary, run, other = one_run
    final, best = run.data.metrics[VAL_ERROR], run.data.metrics["best_val_top1_err"]
    assert final == [m.value for m in ws.history(run.info.run_id, "val_top1_err")][-1]
    assert summary_row(summary, "val top-1 error") == f"{final:.2f} % after the last epoch (best epoch {best:.2f} %)"
    code, out, _ = cnnbench(capsys, "compare", "--a-runs", run.info.run_id, "--b-runs", other,
                            "--metric", "val-error", "--tracking-uri", ws.uri)
    assert code == 0 and compare_record(ws, out)["metrics"]["val-error"]["a"]["estimate"] == final
    assert rows_of(out)["val-error"]["A: median [95 % CI]"] == f"{percent(final)} (1 run)"


def compare_record(ws: Workspace, out: str) -> dict:
    """compare.json of the comparison run that ``out`` names."""
    run_id = re.search(r"artifacts \(compare\.md, compare\.json\) of run (\w+)", out)[1]
    path = MlflowClient(ws.uri).download_artifacts(run_id, "compare.json", str(ws.root))
    return json.loads(open(path).read())
