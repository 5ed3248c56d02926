"""``cnnbench analyze``: one MLflow run per net with the complexity metrics, and the plots as files and artifacts."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from train import cli
from train.engine.schema import at_batch_size
from train.engine.tracking import MlflowTracker
from train.models import complexity, resolve_model
from train.studies import analyze
from train.studies.figures import significant
from train.studies.reports.complexity import PLOTS

NETS = ("squeezenet1_1", "mobilenet_v3_small")  # small; only the first is in the published ranking
BATCHES = (1, 2)


def log_evaluation(uri: str, net: str, acc1: float) -> None:
    """What `cnnbench evaluate` leaves in the experiment: a measured Acc@1 the plots must prefer."""
    tracker = MlflowTracker(uri, "imagenet")
    with tracker.run("eval", {"arch": net, "arch_resolved": f"torchvision/{net}", "weights": "file w.pt",
                              "val_size": 10}, {}):
        tracker.log_metrics({"eval_top1_acc": acc1, "eval_top5_acc": 90.0, "eval_top1_err": 100 - acc1,
                             "eval_top5_err": 10.0}, step=0)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """Two small nets at two batch sizes, one of them with a measured accuracy already in the experiment."""
    from tests.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("analyze"))
    log_evaluation(ws.uri, "mobilenet_v3_small", 42.5)
    # one thread: two threads on a shared 2-core machine can make each pass 100 times slower
    argv = ["--arch", *NETS, "--batch-sizes", *map(str, BATCHES), "--train-batch-size", "2", "--warmup", "1",
            "--iters", "3", "--device", "cpu", "--threads", "1", "--tracking-uri", ws.uri, "--out",
            str(ws.root / "out")]
    threads = torch.get_num_threads()
    try:
        assert analyze.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole test process
    return ws


def analysis_runs(ws) -> dict:
    return {r.data.params["arch"]: r for r in ws.runs("imagenet") if "train_step_images_per_sec" in r.data.metrics}


def test_one_finished_run_per_net_with_the_settings_as_params(analysed):
    runs = analysis_runs(analysed)
    assert set(runs) == set(NETS)
    for arch, run in runs.items():
        assert run.info.status == "FINISHED"
        p = run.data.params
        assert (p["arch_resolved"], p["device"], p["precision"], p["channels_last"], p["batch_size"]) == (
            f"torchvision/{arch}", "cpu", "fp32", "False", "2")
        assert p["batch_sizes"] == "1,2"


def test_complexity_metrics_equal_the_registrys(analysed):
    for arch, run in analysis_runs(analysed).items():
        params, flops = complexity(resolve_model(arch, prefer="imagenet"), 1000)
        assert run.data.metrics["num_params"] == params
        assert run.data.metrics["flops_per_image"] == flops


def test_latency_and_throughput_at_each_batch_size(analysed):
    for run in analysis_runs(analysed).values():
        m = run.data.metrics
        for b in BATCHES:
            median, p95 = m[at_batch_size("latency_median_ms", b)], m[at_batch_size("latency_p95_ms", b)]
            assert 0 < median <= p95
            assert m[at_batch_size("forward_images_per_sec", b)] == pytest.approx(1e3 * b / median)
            assert m[at_batch_size("forward_peak_mem_mib", b)] > 0
        assert m["train_step_images_per_sec"] > 0


def test_plots_are_valid_non_empty_pngs_on_disk_and_in_every_run(analysed):
    for name in PLOTS.values():
        with Image.open(analysed.root / "out" / name) as image:
            image.verify()
        with Image.open(analysed.root / "out" / name) as image:
            assert image.width > 600 and image.height > 400
            low, high = image.convert("L").getextrema()
            assert low < high  # something is drawn
    from mlflow import MlflowClient

    client = MlflowClient(analysed.uri)
    for run in analysis_runs(analysed).values():
        logged = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "complexity")}
        assert logged == {*PLOTS.values(), "complexity.md"}


def test_report_prefers_measured_accuracy_and_marks_published(analysed):
    summary = next(block for block in (analysed.root / "out" / "complexity.md").read_text().split("\n\n")
                   if "Acc@1 %" in block)
    row = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines()}
    assert "42.50 (measured)" in row["mobilenet_v3_small"]
    assert "56.42 (published)" in row["squeezenet1_1"]  # the ranking study's PyTorch row


def test_summary_gives_gflops_and_gmacs_and_every_figure_to_three_significant_digits(analysed):
    from tests.studies.test_report import table

    rows = {row["arch"]: row for row in table((analysed.root / "out" / "complexity.md").read_text(), "arch")
            if "GMACs" in row}
    assert set(rows) == set(NETS)
    for arch, run in analysis_runs(analysed).items():
        m, row = run.data.metrics, rows[arch]
        assert (row["params (M)"], row["GFLOPs"], row["GMACs"]) == (
            significant(m["num_params"] / 1e6), significant(m["flops_per_image"] / 1e9),
            significant(m["flops_per_image"] / 2e9))
        assert row[f"images/s at batch {BATCHES[-1]}"] == significant(
            m[at_batch_size("forward_images_per_sec", BATCHES[-1])])
        assert row["training images/s (batch 2)"] == significant(m["train_step_images_per_sec"])


def test_unavailable_reference_net_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["analyze", "--arch", "resnet18", "ShuffleNet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnbench: error: arch 'ShuffleNet' is not available: ShuffleNet v1")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists()  # refused before any run was opened
