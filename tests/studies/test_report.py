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
        errors = [r.data.metrics["best_val_top1_err"] for r in resnets]
        assert len(errors) == seeds  # two seeds: median (min–max, n=2); one: the figure alone
        assert rows["resnet-20"][f"{label} measured"] == measured_cell(errors)
        reference = 100 - float(next(r for r in published if r["model"] == "resnet-20")[f"{dataset}_top1_acc"])
        assert rows["resnet-20"][f"{label} Δ brief"].startswith(f"{statistics.median(errors) - reference:+.2f}")
        assert rows["resnet-20"][f"{label} Δ README"] == "—"  # the README has no resnet-20 row
    resnets = [r for r in runs if r.data.params["arch"] == "resnet-20" and r.data.params["dataset"] == "cifar10"]
    seconds = statistics.median(r.data.metrics["time_to_target_s"] for r in resnets)  # any error is <= 100 %
    assert rows["resnet-20"]["CIFAR-10 reached in"] == f"≤ 100 %: {significant(seconds)} s, 1 epoch (2 of 2)"
    (alexnet,) = [r for r in runs if r.data.params["arch"] == "alexnet"]
    assert alexnet.info.status == "KILLED"
    assert rows["alexnet"]["CIFAR-10 measured"] == measured_cell([alexnet.data.metrics["best_val_top1_err"]],
                                                                 flagged=True)
    assert rows["alexnet"]["measured params (M)"] == significant(alexnet.data.metrics['num_params'] / 1e6)
    assert rows["alexnet"]["CIFAR-100 measured"] == rows["vgg16"]["CIFAR-10 measured"] == "—"
    assert rows["alexnet"]["CIFAR-10 reached in"] == "—"  # trained without a target
    assert (rows["resnet-20"]["epochs"], rows["alexnet"]["epochs"]) == ("1", "2")
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
    steady = [is_trusted_spread(r.data.metrics["train_images_per_sec_spread"]) for r in resnet_c10]
    (row,) = [r for r in rows if r["arch"] == "resnet-20" and r["data"] == "cifar10 32 px"]
    assert row["images/s"] == f"{significant(statistics.median(rates))} [{significant(min(rates))}–" \
                              f"{significant(max(rates))}, n=2]" + ("" if any(steady) else " ⚠")
    assert (row["batch / worker"], row["format"], row["precision"], row["workers"]) == ("32", "NCHW", "fp32", "1")
    Image.open(out / "throughput.png").verify()
    assert pixels_near(out / "throughput.png", TAB_BLUE) > 50


def log_timed_run(client, experiment_id: str, world_size: int, images_per_sec: float, spread: float,
                  channels_last: str = "True", precision: str = "bf16") -> None:
    """A run record as the engine writes it, with throughput figures chosen by the test."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=f"w{world_size}").info.run_id
    params = {"device_name": "test GPU", "arch": "resnet50", "dataset": "synthetic", "image_size": "224",
              "batch_size": "64", "channels_last": channels_last, "precision": precision,
              "launcher": "single" if world_size == 1 else "ddp", "world_size": str(world_size)}
    metrics = {"train_images_per_sec": images_per_sec, "train_images_per_sec_spread": spread}
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
    assert rows["1"]["images/s"] == "110 [100–120, n=3]"  # 3 runs: the 95 % interval is their range
    assert rows["2"]["scaling efficiency"] == f"{100 * 198 / (2 * 110):.1f} %"
    assert rows["2"]["images/s per worker"] == "99.0"
    assert rows["4"]["images/s"] == "500 ⚠"  # windows spread 30 % > 10 %: flagged, and said why
    assert rows["4"]["scaling efficiency"] == f"{100 * 500 / (4 * 110):.1f} % ⚠"
    assert rows["8"]["images/s"] == "9.51 ⚠"  # one window: no spread says the figure is steady
    (report,) = [r for r in ws.runs("scaling") if REPORT_TAG in r.data.tags]  # it trained no epoch: says what it did
    assert report.data.tags["cnnbench.end"] == "throughput of 6 runs logged as artifacts (throughput.md, throughput.png)"
    assert "windows spread 30 % (over 10 %)" in markdown and "## test GPU" in markdown
    assert "w8 (`" in markdown and "one timing window: no spread to tell a steady figure" in markdown


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
    assert rows["NCHW", "fp32"]["images/s"] == "100 [98.0–102, n=3]"  # 3 runs: the interval is their range
    assert rows["NCHW", "fp32"]["vs NCHW fp32"] == "(baseline)"
    for key, differs in ((("True", "fp32"), True), (("False", "bf16"), False)):
        _, _, ratio = ratio_interval([[v] for v in baseline], [[v] for v in SPEED_UPS[key]])
        cell = f"{ratio.estimate:.2f}× [{ratio.low:.2f}–{ratio.high:.2f}]" + ("" if differs else " n.s.")
        assert rows["NHWC" if key[0] == "True" else "NCHW", key[1]]["vs NCHW fp32"] == cell
    assert rows["NHWC", "bf16"]["vs NCHW fp32"] == "2.00×" and rows["NHWC", "bf16"]["images/s"] == "200"
    assert "n.s." in markdown.split("| arch |")[0]  # the text says what n.s. means and what is compared


def log_cifar_run(client, experiment_id: str, net: str, dataset: str, best_err: float, seed: int,
                  target: float | None = None, reached: tuple[float, int] | None = None) -> None:
    """A CIFAR training run as the engine records it; ``reached``: (time_to_target_s, epochs_to_target)."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=f"{net} {dataset} {seed}").info.run_id
    params = {"arch": net, "arch_resolved": f"cifar/{net}", "dataset": dataset, "epochs": "3", "seed": str(seed)}
    metrics = {"best_val_top1_err": best_err, "num_params": 1.7e6}
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
    assert resnet["CIFAR-10 measured"] == "6.00 [5.90–6.30, n=3]"
    assert resnet["CIFAR-10 Δ brief"] == f"{6.00 - (100 - 91.54):+.2f}"  # 8.46 lies outside [5.90, 6.30]
    assert resnet["CIFAR-10 Δ README"] == f"{6.00 - 6.11:+.2f} n.s."  # 6.11 lies within: not significant
    assert resnet["CIFAR-10 reached in"] == "≤ 10 %: 41.0 s, 3 epochs (2 of 3)"
    assert resnet["CIFAR-100 measured"] == resnet["CIFAR-100 reached in"] == "—"
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
