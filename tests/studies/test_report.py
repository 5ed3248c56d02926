"""``cnnbench report``: MLflow runs in, tables shaped like the published ones and plots out, logged as a run."""
from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fakedata import write_cifar10, write_cifar100, write_imagefolder
from tests.studies.test_suite import CNNBENCH, cnnbench
from tests.workspace import Workspace
from train.engine.schema import is_trusted_spread
from train.studies.figures import significant
from train.studies.published import read_reference
from train.studies.report import REPORT_TAG
from train.studies.reports import KINDS
from train.studies.stats import median_interval, ratio_interval

STUDY = """\
name: cifar_mini
settings: {{data_dir: {data}, epochs: 1, batch_size: 32, workers: 0, device: cpu, warmup_steps: 0,
            window_steps: 100, checkpoint_dir: {ckpt}, target_top1_err: 100}}
grid:
  arch: [resnet-20]
  run:
    - {{dataset: cifar10, seed: 0}}
    - {{dataset: cifar10, seed: 1}}
    - {{dataset: cifar100, seed: 0}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Real short trainings on fake CIFAR in the real format: resnet-20 on CIFAR-10 with two seeds and on
    CIFAR-100 with one (a suite), and an alexnet run stopped after one of two epochs (KILLED, so flagged)."""
    ws = Workspace(tmp_path_factory.mktemp("study"))
    data = write_cifar100(write_cifar10(ws.root / "data"))
    suite = ws.root / "study.yaml"
    suite.write_text(STUDY.format(data=data, ckpt=ws.root / "ckpt"))
    made = subprocess.run([CNNBENCH, "suite", "run", str(suite), "--tracking-uri", ws.uri], cwd=ws.root,
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr
    stopped = ws.launch("--arch", "alexnet", "--dataset", "cifar10", "--data-dir", str(data), "--epochs", "2",
                        "--stop-after", "1", "--batch-size", "32", "--experiment", "cifar_mini")
    assert stopped.returncode == 0, stopped.stderr
    return ws


def table(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose first header is ``first_header``, as dicts."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    headers = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def measured_cell(values: list[float], flagged: bool = False, spec: str = ".2f") -> str:
    """How a report writes a median over repeats: then [its 95 % bootstrap interval, n] when there are several."""
    text = f"{statistics.median(values):{spec}}"
    if len(values) > 1:
        ci = median_interval([[v] for v in values])
        text += f" [{ci.low:{spec}}–{ci.high:{spec}}, n={len(values)}]"
    return text + " ⚠" if flagged else text


def pixels_near(png: Path, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(rgb)).max(axis=2) <= tolerance).sum())


TAB_BLUE, PUBLISHED_GREY = (31, 119, 180), (179, 179, 179)
FINAL, BEST = "measured, final epoch (%)", "measured, best epoch (%)"  # the CIFAR table's two val errors
DELTA_BRIEF, DELTA_README = "Δ brief, best epoch: verdict", "Δ README, best epoch: verdict"


@pytest.mark.slow
def test_cifar_report_sets_measured_runs_beside_the_published_table(study, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, _ = cnnbench(capsys, "report", "cifar", "--experiment", "cifar_mini", "--out", str(out),
                               "--tracking-uri", study.uri)
    assert code == 0 and "cifar.md" in stdout
    rows = {row["model"]: row for row in table((out / "cifar.md").read_text(), "model")}
    published = read_reference("cifar_published")
    assert list(rows) == [r["model"] for r in published]  # the brief's table's rows, in its order
    for ref in published:
        row = rows[ref["model"]]
        assert row["net"] == ref["arch"]
        assert row["params (M)"] == (ref["params_m"] or "—")
        assert row["CIFAR-10 error, brief (%)"] == f"{100 - float(ref['cifar10_top1_acc']):.2f}"
        assert row["CIFAR-100 error, brief (%)"] == f"{100 - float(ref['cifar100_top1_acc']):.2f}"

    runs = [r for r in study.runs("cifar_mini") if REPORT_TAG not in r.data.tags]
    for dataset, label, seeds in (("cifar10", "CIFAR-10", 2), ("cifar100", "CIFAR-100", 1)):
        resnets = [r for r in runs if r.data.params["arch"] == "resnet-20" and r.data.params["dataset"] == dataset]
        errors = [r.data.metrics["final_val_top1_err"] for r in resnets]
        assert len(errors) == seeds  # two seeds: median (min–max, n=2); one: the figure alone
        assert rows["resnet-20"][f"{label} {FINAL}"] == measured_cell(errors)
        assert rows["resnet-20"][f"{label} {BEST}"] == measured_cell([r.data.metrics["best_val_top1_err"]
                                                                      for r in resnets])
        reference = 100 - float(next(r for r in published if r["model"] == "resnet-20")[f"{dataset}_top1_acc"])
        best = statistics.median(r.data.metrics["best_val_top1_err"] for r in resnets)
        assert rows["resnet-20"][f"{label} {DELTA_BRIEF}"].startswith(f"{best - reference:+.2f}")
        assert rows["resnet-20"][f"{label} {DELTA_README}"] == "—"  # the README has no resnet-20 row
    resnets = [r for r in runs if r.data.params["arch"] == "resnet-20" and r.data.params["dataset"] == "cifar10"]
    seconds = statistics.median(r.data.metrics["time_to_target_s"] for r in resnets)  # any error is <= 100 %
    assert rows["resnet-20"]["CIFAR-10 reached in"] == f"≤ 100 %: {significant(seconds)} s, 1 epoch (2 of 2)"
    (alexnet,) = [r for r in runs if r.data.params["arch"] == "alexnet"]
    assert alexnet.info.status == "KILLED"
    assert rows["alexnet"][f"CIFAR-10 {FINAL}"] == measured_cell([alexnet.data.metrics["final_val_top1_err"]],
                                                                  flagged=True)
    assert rows["alexnet"]["measured params (M)"] == significant(alexnet.data.metrics['num_params'] / 1e6)
    assert rows["alexnet"][f"CIFAR-100 {FINAL}"] == rows["vgg16"][f"CIFAR-10 {FINAL}"] == "—"
    assert rows["alexnet"]["CIFAR-10 reached in"] == "—"  # trained without a target
    assert rows["resnet-20"]["CIFAR-10 settings"] == "global batch 32, lr 0.1, epochs 1"
    assert rows["alexnet"]["CIFAR-10 settings"].endswith(", epochs 2")
    assert f"`{alexnet.info.run_id}`): run killed" in (out / "cifar.md").read_text()

    png = out / "cifar.png"
    Image.open(png).verify()
    assert pixels_near(png, TAB_BLUE) > 500 and pixels_near(png, PUBLISHED_GREY) > 500  # measured and published bars


@pytest.mark.slow
def test_report_is_logged_as_a_run_and_left_out_of_later_reports(study, tmp_path, capsys):
    from mlflow import MlflowClient

    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        code, _, _ = cnnbench(capsys, "report", "cifar", "--experiment", "cifar_mini", "--out", str(out),
                              "--tracking-uri", study.uri)
        assert code == 0
    assert (first / "cifar.md").read_text() == (second / "cifar.md").read_text()
    reports = [r for r in study.runs("cifar_mini") if r.data.tags.get(REPORT_TAG) == "cifar"]
    assert len(reports) >= 2 and {r.info.status for r in reports} == {"FINISHED"}
    logged = {a.path for a in MlflowClient(study.uri).list_artifacts(reports[0].info.run_id)}
    assert {"cifar.md", "cifar.png"} <= logged


@pytest.mark.slow
def test_throughput_report_over_real_runs_shows_their_logged_images_per_second(study, tmp_path, capsys):
    out = tmp_path / "report"
    code, _, _ = cnnbench(capsys, "report", "throughput", "--experiment", "cifar_mini", "--out", str(out),
                          "--tracking-uri", study.uri)
    assert code == 0
    rows = table((out / "throughput.md").read_text(), "arch")
    runs = [r for r in study.runs("cifar_mini") if REPORT_TAG not in r.data.tags]
    resnet_c10 = [r for r in runs if (r.data.params["arch"], r.data.params["dataset"]) == ("resnet-20", "cifar10")]
    rates = [r.data.metrics["train_images_per_sec"] for r in resnet_c10]
    # one timing window per run (their epoch is shorter than a window): no spread says they are steady, so marked
    steady = [is_trusted_spread(r.data.metrics["epoch_images_per_sec_spread"]) for r in resnet_c10]
    (row,) = [r for r in rows if r["arch"] == "resnet-20" and r["data"] == "cifar10 32 px"]
    ci = median_interval([[v] for v in rates])  # two seeds, every other setting equal: one cell
    assert row["images/s"] == f"{significant(statistics.median(rates))} [{significant(ci.low)}–" \
                              f"{significant(ci.high)}, n=2]" + ("" if any(steady) else " ⚠")
    assert (row["batch / worker"], row["format"], row["precision"], row["workers"]) == ("32", "NCHW", "fp32", "1")
    Image.open(out / "throughput.png").verify()
    assert pixels_near(out / "throughput.png", TAB_BLUE) > 50


def log_timed_run(client, experiment_id: str, world_size: int, images_per_sec: float, spread: float,
                  channels_last: str = "True", precision: str = "bf16", **other: str) -> None:
    """A run record as the engine writes it, with throughput figures chosen by the test."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=f"w{world_size}").info.run_id
    params = {"device_name": "test GPU", "arch": "resnet50", "dataset": "synthetic", "image_size": "224",
              "batch_size": "64", "channels_last": channels_last, "precision": precision,
              "launcher": "single" if world_size == 1 else "ddp", "world_size": str(world_size), **other}
    metrics = {"train_images_per_sec": images_per_sec, "epoch_images_per_sec_spread": spread}
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 1) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")


def test_throughput_scaling_efficiency_is_against_the_median_one_worker_run(tmp_path, capsys):
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    client = MlflowClient(ws.uri)
    experiment = client.create_experiment("scaling")
    for world, rate, spread in ((1, 100.0, 2.0), (1, 120.0, 3.0), (1, 110.0, 1.0), (2, 198.0, 4.0),
                                (4, 500.0, 30.0), (8, 9.51, float("nan"))):  # NaN: the engine's spread of one window
        log_timed_run(client, experiment, world, rate, spread)
    code, _, _ = cnnbench(capsys, "report", "throughput", "--experiment", "scaling", "--out", str(tmp_path / "r"),
                          "--tracking-uri", ws.uri)
    assert code == 0
    markdown = (tmp_path / "r" / "throughput.md").read_text()
    rows = {row["workers"]: row for row in table(markdown, "arch")}
    assert rows["1"]["images/s"] == "110 [87.5–138, n=3]"  # 3 runs: Student's t on their logarithms
    assert rows["2"]["scaling efficiency"] == f"{100 * 198 / (2 * 110):.1f} %"
    assert rows["2"]["images/s per worker"] == "99.0"
    assert rows["4"]["images/s"] == "500 ⚠"  # windows spread 30 % > 10 %: flagged, and said why
    assert rows["4"]["scaling efficiency"] == f"{100 * 500 / (4 * 110):.1f} % ⚠"
    assert rows["8"]["images/s"] == "9.51 ⚠"  # one window: no spread says the figure is steady
    (report,) = [r for r in ws.runs("scaling") if REPORT_TAG in r.data.tags]  # it trained no epoch: says what it did
    assert report.data.tags["cnnbench.end"] == "throughput of 6 runs logged as artifacts (throughput.md, throughput.png)"
    assert "windows spread 30 % (over 10 %)" in markdown and "## test GPU" in markdown
    assert "w8 (`" in markdown and "one timing window: no spread to tell a steady figure" in markdown


def test_throughput_cells_hold_only_runs_whose_every_setting_is_equal(tmp_path, capsys):
    """Issue 21: two eager runs at ~2,000 images/s and two compiled at ~3,000 were one cell, 2505 [2000-3020, n=4];
    runs that differ only in their seed, checkpoint folder or measured peak TFLOP/s are repeats of one cell."""
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    client = MlflowClient(ws.uri)
    experiment = client.create_experiment("folded")
    for seed, (eager, compiled) in enumerate([(2000.0, 3000.0), (2010.0, 3020.0)]):
        for rate, compile_ in ((eager, "False"), (compiled, "True")):
            log_timed_run(client, experiment, 1, rate, 2.0, compile=compile_, seed=str(seed),
                          checkpoint_dir=f"ckpt{seed}", peak_tflops=str(100 + seed))
    log_timed_run(client, experiment, 1, 1000.0, 2.0, compile="False", sgd_impl="for-loop")
    code, _, _ = cnnbench(capsys, "report", "throughput", "--experiment", "folded", "--out", str(tmp_path / "r"),
                          "--tracking-uri", ws.uri)
    assert code == 0
    markdown = (tmp_path / "r" / "throughput.md").read_text()
    cells = {row["other settings"]: row["images/s"] for row in table(markdown, "arch")}
    assert cells == {"compile=False, sgd_impl=?": measured_cell([2000.0, 2010.0], spec=".0f"),
                     "compile=True, sgd_impl=?": measured_cell([3000.0, 3020.0], spec=".0f"),
                     "compile=False, sgd_impl=for-loop": "1000"}
    assert "equal but seed and checkpoint_dir, peak_tflops, peak_tflops_source" in markdown.split("| arch |")[0]


def test_a_noisy_timing_flag_leaves_a_run_out_of_timed_figures_only_and_reproduction_verdicts(tmp_path, capsys):
    """Issue 21: errors 8.0/8.5/12.0, the 8.0 run's timing windows noisy: the error cell was 10.25 (n=2); it is
    8.50 (n=3). And the reproduction verdict on both sides of a published figure, and with too few runs."""
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    client = MlflowClient(ws.uri)
    experiment = client.create_experiment("verdicts")
    for seed, (error, spread) in enumerate([(8.0, 30.0), (8.5, 2.0), (12.0, 2.0)]):
        log_cifar_run(client, experiment, "resnet-20", "cifar10", error, seed, spread=spread)
    for seed, error in enumerate([24.0, 24.3, 24.1]):  # published: 25.91 (brief), 22.78 (README)
        log_cifar_run(client, experiment, "alexnet", "cifar10", error, seed)
    log_cifar_run(client, experiment, "vgg16", "cifar10", 11.0, 0)
    for seed, epochs in enumerate(["3", "5"]):  # one cell: its row is the net's, but the report says what it folds
        log_cifar_run(client, experiment, "alexnet", "cifar100", 60.0 + seed, seed, epochs=epochs)
    code, _, _ = cnnbench(capsys, "report", "cifar", "--experiment", "verdicts", "--out", str(tmp_path / "r"),
                          "--tracking-uri", ws.uri)
    assert code == 0
    markdown = (tmp_path / "r" / "cifar.md").read_text()
    rows = {row["net"]: row for row in table(markdown, "model")}
    assert rows["resnet-20"][f"CIFAR-10 {BEST}"] == measured_cell([8.0, 8.5, 12.0])
    assert rows["resnet-20"][f"CIFAR-10 {BEST}"].startswith("8.50 [") and "n=3]" in markdown
    assert "windows spread 30 %" in markdown  # still listed among the flagged runs
    alexnet = rows["alexnet"]
    assert alexnet[f"CIFAR-10 {DELTA_BRIEF}"] == f"{24.1 - 25.91:+.2f}, better"  # the interval lies below 25.91
    assert alexnet[f"CIFAR-10 {DELTA_README}"] == f"{24.1 - 22.78:+.2f}, worse"  # ... and above 22.78
    assert rows["vgg16"][f"CIFAR-10 {DELTA_BRIEF}"] == f"{11.0 - (100 - 89.83):+.2f}, too few runs (1 of 2)"
    assert "Cells that fold runs of different settings (besides the seed): alexnet CIFAR-100: epochs 3/5." in markdown


SPEED_UPS = {  # (channels_last, precision) -> images/s of its repeats
    ("False", "fp32"): [100.0, 102.0, 98.0],
    ("True", "fp32"): [150.0, 153.0, 147.0],  # clearly faster: its interval lies above 1
    ("False", "bf16"): [99.0, 103.0, 101.0],  # within the noise: its interval holds 1
    ("True", "bf16"): [200.0],  # one run: a ratio, but no interval
}


def test_throughput_repeats_show_intervals_and_speed_ups_not_significant_are_marked(tmp_path, capsys):
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    client = MlflowClient(ws.uri)
    experiment = client.create_experiment("repeats")
    for (channels_last, precision), rates in SPEED_UPS.items():
        for rate in rates:
            log_timed_run(client, experiment, 1, rate, 2.0, channels_last, precision)
    code, _, _ = cnnbench(capsys, "report", "throughput", "--experiment", "repeats", "--out", str(tmp_path / "r"),
                          "--tracking-uri", ws.uri)
    assert code == 0
    markdown = (tmp_path / "r" / "throughput.md").read_text()
    rows = {(row["format"], row["precision"]): row for row in table(markdown, "arch")}
    baseline = SPEED_UPS["False", "fp32"]
    assert rows["NCHW", "fp32"]["images/s"] == "100 [95.1–105, n=3]"  # 3 runs: Student's t on their logarithms
    assert rows["NCHW", "fp32"]["vs NCHW fp32"] == "(baseline)"
    for key, differs in ((("True", "fp32"), True), (("False", "bf16"), False)):
        _, _, ratio = ratio_interval([[v] for v in baseline], [[v] for v in SPEED_UPS[key]])
        cell = f"{ratio.estimate:.2f}× [{ratio.low:.2f}–{ratio.high:.2f}]" + ("" if differs else " n.s.")
        assert rows["NHWC" if key[0] == "True" else "NCHW", key[1]]["vs NCHW fp32"] == cell
    assert rows["NHWC", "bf16"]["vs NCHW fp32"] == "2.00×" and rows["NHWC", "bf16"]["images/s"] == "200"
    assert "n.s." in markdown.split("| arch |")[0]  # the text says what n.s. means and what is compared


def log_cifar_run(client, experiment_id: str, net: str, dataset: str, best_err: float, seed: int,
                  target: float | None = None, reached: tuple[float, int] | None = None, spread: float = 2.0,
                  epochs: str = "3") -> None:
    """A CIFAR training run as the engine records it, its last epoch 0.5 points above its best;
    ``reached``: (time_to_target_s, epochs_to_target)."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=f"{net} {dataset} {seed}").info.run_id
    params = {"arch": net, "arch_resolved": f"cifar/{net}", "dataset": dataset, "epochs": epochs, "seed": str(seed),
              "global_batch_size": "128", "lr_scaled": "0.1"}
    metrics = {"best_val_top1_err": best_err, "final_val_top1_err": best_err + 0.5, "num_params": 1.7e6,
               "train_images_per_sec": 100.0, "epoch_images_per_sec_spread": spread}
    if target is not None:
        params["target_top1_err"] = str(target)
    if reached is not None:
        metrics.update(time_to_target_s=reached[0], epochs_to_target=reached[1])
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")


def test_cifar_report_sets_each_published_source_in_its_own_columns_with_intervals(tmp_path, capsys):
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    client = MlflowClient(ws.uri)
    experiment = client.create_experiment("cifar")
    for seed, (error, reached) in enumerate([(5.9, (40.0, 3)), (6.0, (42.0, 3)), (6.3, None)]):
        log_cifar_run(client, experiment, "resnet-164", "cifar10", error, seed, target=10.0, reached=reached)
    code, _, _ = cnnbench(capsys, "report", "cifar", "--experiment", "cifar", "--out", str(tmp_path / "r"),
                          "--tracking-uri", ws.uri)
    assert code == 0
    markdown = (tmp_path / "r" / "cifar.md").read_text()
    rows = {row["net"]: row for row in table(markdown, "model")}

    readme, brief = read_reference("cifar_bearpaw_readme"), read_reference("cifar_published")
    assert {r["arch"] for r in readme} <= {r["arch"] for r in brief}  # every README row has its table row
    for ref in brief:  # the README's error where it has the net, never the brief's figure in its place
        own = next((r for r in readme if r["arch"] == ref["arch"]), None)
        for ds, label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
            assert rows[ref["arch"]][f"{label} error, README (%)"] == (f"{float(own[f'{ds}_top1_err']):.2f}"
                                                                      if own else "—")
    assert (rows["alexnet"]["CIFAR-10 error, brief (%)"], rows["alexnet"]["CIFAR-10 error, README (%)"]) == \
        ("25.91", "22.78")

    resnet = rows["resnet-164"]  # the published "resnet-110" row, trained as cnnbench's resnet-164
    assert resnet["model"] == "resnet-110"
    assert resnet[f"CIFAR-10 {BEST}"] == "6.00 [5.57–6.60, n=3]"
    assert resnet[f"CIFAR-10 {FINAL}"].startswith("6.50 [") and resnet[f"CIFAR-10 {FINAL}"].endswith(", n=3]")
    # the verdicts hold the best epoch against the published figures, which are best epochs
    assert resnet[f"CIFAR-10 {DELTA_BRIEF}"] == f"{6.00 - (100 - 91.54):+.2f}, better"  # 8.46 lies above [5.57, 6.60]
    assert resnet[f"CIFAR-10 {DELTA_README}"] == f"{6.00 - 6.11:+.2f}, reproduced"  # 6.11 lies within
    assert resnet["CIFAR-10 settings"] == "global batch 128, lr 0.1, epochs 3"
    assert resnet["CIFAR-10 reached in"] == "≤ 10 %: 41.0 s, 3 epochs (2 of 3)"
    assert resnet[f"CIFAR-100 {FINAL}"] == resnet["CIFAR-100 reached in"] == "—"
    assert "commit 24f1c45" in markdown and "the project brief's table" in markdown


def test_each_cifar_reference_cites_its_own_source():
    from train.studies.published import REFERENCE_DIR

    def citation(name: str) -> str:
        return "".join(line for line in (REFERENCE_DIR / f"{name}.csv").open() if line.startswith("#"))

    brief, readme = citation("cifar_published"), citation("cifar_bearpaw_readme")
    assert brief.startswith("# Source: the CIFAR table of the project's brief") and "NOT that README's" in brief
    assert readme.startswith("# Source: the README of bearpaw/pytorch-classification, commit 24f1c456f48c")


def test_report_over_a_missing_or_empty_experiment_is_one_line_and_exit_2(tmp_path, capsys):
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    MlflowClient(ws.uri).create_experiment("empty")
    for experiment, message in (("nope", "no experiment 'nope'"), ("empty", "has no training runs")):
        code, out, err = cnnbench(capsys, "report", "cifar", "--experiment", experiment, "--tracking-uri", ws.uri,
                                  "--out", str(tmp_path / "r"))
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_report_to_an_out_that_is_a_file_is_one_line_and_logs_no_report_run(ws, capsys):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(ws.uri)
    run_id = client.create_run(client.create_experiment("smoke")).info.run_id
    params = {"device_name": "cpu", "arch": "resnet-20", "dataset": "digits", "image_size": "32",
              "channels_last": "False", "precision": "fp32", "batch_size": "32", "world_size": "1",
              "launcher": "single"}
    client.log_batch(run_id, metrics=[Metric("train_images_per_sec", 100.0, 0, 0)],
                     params=[Param(key, value) for key, value in params.items()])
    client.set_terminated(run_id)
    out = ws.root / "taken"
    out.write_text("a file\n")
    capsys.readouterr()  # MLflow's lines on creating the store
    code, stdout, err = cnnbench(capsys, "report", "throughput", "--experiment", "smoke", "--tracking-uri", ws.uri,
                                 "--out", str(out))
    assert code == 2 and stdout == ""
    assert err == f"cnnbench: error: --out {out} is a file, not a folder: give a folder for the output\n"
    assert [r.info.run_id for r in ws.runs("smoke")] == [run_id]  # no report run was logged
    assert out.read_text() == "a file\n"


@pytest.mark.parametrize("command", [["analyze", "--arch", "resnet18"],
                                     ["evaluate", "--arch", "resnet18", "--pretrained", "--data-dir", "DATA"]])
def test_a_study_whose_out_is_a_file_stops_in_one_line_before_any_net_runs(ws, capsys, command):
    data = write_imagefolder(ws.root / "data", train_per_class=0, val_per_class=1)
    out = ws.root / "taken"
    out.write_text("a file\n")
    code, stdout, err = cnnbench(capsys, *[str(data) if arg == "DATA" else arg for arg in command],
                                 "--tracking-uri", ws.uri, "--out", str(out))
    assert code == 2 and stdout == ""
    assert err == f"cnnbench: error: --out {out} is a file, not a folder: give a folder for the output\n"
    assert ws.runs("imagenet") == [] and out.read_text() == "a file\n"  # no net measured, no run opened


def test_report_kind_without_its_module_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(KINDS, "sketch", "sketch")  # a kind whose module was never written
    code, _, err = cnnbench(capsys, "report", "sketch", "--experiment", "x", "--tracking-uri",
                            f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2 and err == "cnnbench: error: report kind 'sketch' is not available in this installation " \
                                "(no module train.studies.reports.sketch)\n"


def test_unknown_report_kind_is_refused_by_the_parser(capsys):
    code, _, err = cnnbench(capsys, "report", "tables", "--experiment", "x")
    assert code == 2 and "invalid choice: 'tables'" in err and err.count("\n") == 1


def test_cnnbench_lists_suite_and_report(capsys):
    code, out, _ = cnnbench(capsys, "--help")
    assert code == 0 and "\n  suite " in out and "\n  report " in out
