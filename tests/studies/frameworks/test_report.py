"""The ``frameworks`` report over real runs: measured figures beside the published ones, and unsupported cells."""
from __future__ import annotations

from mlflow import MlflowClient
from tests.studies.frameworks.conftest import EXPERIMENT
from train.studies.reports.frameworks import render


def test_report_sets_measured_runs_beside_the_published_figures(store, framework_run, tmp_path):
    vgg = framework_run("pytorch", "vgg-cnn")
    tf_run = framework_run("tensorflow", "train-channels_first")
    client = MlflowClient(store.uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])

    markdown = render(runs, tmp_path / "report").read_text()

    assert (tmp_path / "report" / "frameworks.png").stat().st_size > 0
    error = client.get_run(vgg.run_id).data.metrics["final_val_top1_err"]
    vgg_row = next(line for line in markdown.splitlines() if line.startswith("| torch ") and "| pytorch |" in line)
    assert f"| {error:.2f} |" in vgg_row or f"| {error:.2f} ⚠ |" in vgg_row  # ⚠: timing windows of a tiny run
    assert "| 22 | 169 |" in vgg_row  # the study's PyTorch row: 78 % accuracy, 169 s
    tf_nchw = next(line for line in markdown.splitlines()
                   if line.startswith("| tensorflow") and "channels_first" in line)
    assert tf_nchw.endswith("| 4 |")  # published C5.18xLarge NCHW
    if client.get_run(tf_run.run_id).data.params["outcome"] == "unsupported":  # as this TensorFlow build decides
        assert "unsupported on CPU: TensorFlow:" in tf_nchw
    else:
        assert "unsupported" not in tf_nchw
    assert "DeepLearningFrameworks (K80 GPU / 6-core Xeon, 2017)" in markdown
