"""The single-process launcher end to end: real data, the MLflow record, run status (stop and resume are held in
test_equivalence.py and test_resume.py)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.fakedata import write_cifar10, write_imagefolder
from tests.workspace import SINGLE, Workspace, check_ok
from train.engine.checkpoint import find_checkpoint, load_checkpoint
from train.engine.schema import EPOCH_METRICS, GPU_ONLY_METRICS, PARAM_NAMES, RUN_METRICS, WINDOW_METRICS

DIGITS_EPOCHS = 5  # the README's main job


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """resnet-20 on scikit-learn's digits through the real launcher, as the README's main job does."""
    ws = Workspace(tmp_path_factory.mktemp("digits"))
    proc = check_ok(ws.launch("--arch", "resnet-20", "--dataset", "digits", "--epochs", str(DIGITS_EPOCHS)))
    (run,) = ws.runs()
    return ws, run, proc


@pytest.mark.slow
def test_resnet20_learns_digits(digits_run):
    ws, run, _ = digits_run
    errors = [m.value for m in ws.history(run.info.run_id, "val_top1_err")]
    assert [m.step for m in ws.history(run.info.run_id, "val_top1_err")] == list(range(1, DIGITS_EPOCHS + 1))
    assert errors[-1] <= 10.0, errors
    assert run.data.metrics["best_val_top1_err"] == min(errors)


# what the brief asks every run to log
TRAINING_PARAMS = {"arch", "dataset", "launcher", "world_size", "batch_size", "global_batch_size", "val_batch_size",
                   "precision", "loader", "torch_version", "torchvision_version", "timm_version", "mlflow_version",
                   "python_version", "device", "device_name", "hostname", "git_sha", "framework", "backend"}
TRAINING_RUN_METRICS = {"num_params", "flops_per_image", "train_images_per_sec", "best_val_top1_err",
                        "final_val_top1_err", "final_val_top5_err", "peak_mem_mib", "train_time_s", "startup_time_s"}


@pytest.mark.slow
def test_run_record_carries_the_whole_schema(digits_run):
    ws, run, _ = digits_run
    assert run.info.status == "FINISHED"
    # the schema also declares what analyze/evaluate/framework runs log; a training run logs its own share
    assert set(run.data.params) <= PARAM_NAMES and set(run.data.metrics) <= EPOCH_METRICS | WINDOW_METRICS | RUN_METRICS
    assert TRAINING_PARAMS <= set(run.data.params)
    assert EPOCH_METRICS - GPU_ONLY_METRICS <= set(run.data.metrics)
    assert not GPU_ONLY_METRICS & set(run.data.metrics) and run.data.params["energy_counter"].startswith("n/a: ")
    assert TRAINING_RUN_METRICS <= set(run.data.metrics)
    p = run.data.params
    assert (p["launcher"], p["world_size"], p["framework"], p["batch_size"], p["global_batch_size"]) == \
        ("single", "1", "pytorch", "128", "128")
    assert (p["train_size"], p["val_size"], p["device"]) == ("1347", "450", "cpu")
    assert p["torch_version"] == torch.__version__ and len(p["git_sha"]) >= 40
    assert run.data.metrics["num_params"] == 272474  # the basic-block resnet-20, 10 classes
    assert run.info.run_name == "resnet-20 digits b128 fp32"  # what tells runs apart in the runs table
    assert "None" not in p.values() and "()" not in p.values()  # unset settings are left out, not spelled out


@pytest.mark.slow
def test_run_record_follows_mlflows_conventions(digits_run):
    """What MLflow's UI and other tools read: the data set as a dataset input, the source as MLflow's own tags."""
    ws, run, _ = digits_run
    (dataset_input,) = run.inputs.dataset_inputs
    assert (dataset_input.dataset.name, len(dataset_input.dataset.digest)) == ("digits", 8)
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == run.data.params["git_sha"].removesuffix("-dirty")
    assert tags["mlflow.source.name"] == "cnnbench" and tags["mlflow.user"]
    assert 0 <= run.data.metrics["data_wait_frac"] < 1


@pytest.mark.slow
def test_summary_and_ui_command_are_printed(digits_run):
    ws, run, proc = digits_run
    assert run.info.run_id in proc.stdout
    assert f"ui --backend-store-uri {ws.uri}" in proc.stdout


def test_cifar_on_disk_format_trains_one_epoch_through_the_real_loader(ws):
    data = write_cifar10(ws.root / "data")
    check_ok(ws.launch("--dataset", "cifar10", "--data-dir", str(data), "--epochs", "1", "--batch-size", "32",
                       "--workers", "2"))
    (run,) = ws.runs()
    assert run.info.status == "FINISHED"
    assert (run.data.params["train_size"], run.data.params["val_size"]) == ("100", "17")
    assert 0 <= run.data.metrics["val_top1_err"] <= 100


def test_imagenet_folder_trains_a_torchvision_net(ws):
    data = write_imagefolder(ws.root / "data")  # 3 classes x (6 train, 3 val) JPEGs of mixed sizes
    check_ok(ws.launch("--dataset", "imagenet", "--data-dir", str(data), "--arch", "resnet18", "--epochs", "1",
                       "--batch-size", "8", "--workers", "2"))
    (run,) = ws.runs()
    p = run.data.params
    assert (p["arch_resolved"], p["image_size"], p["num_classes"]) == ("torchvision/resnet18", "224", "3")
    assert (p["train_size"], p["val_size"]) == ("18", "9")
    assert run.data.metrics["flops_per_image"] > 3e9  # resnet18 at 224: ~1.8 GMACs


def final_weights(ws: Workspace) -> dict:
    (run,) = ws.runs()
    return load_checkpoint(find_checkpoint(str(ws.root / "ckpt" / run.info.run_id)))["model"]


def test_sigterm_closes_the_run_as_killed(ws):
    args = [sys.executable, str(SINGLE), *ws.flags(), "--dataset", "synthetic", "--image-size", "32",
            "--num-classes", "10", "--synthetic-train-size", "1000000", "--epochs", "1", "--batch-size", "16"]
    proc = subprocess.Popen(args, cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not any(r.info.status == "RUNNING" for r in _runs_if_any(ws)) and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]  # 128 + SIGTERM, as schedulers expect
    assert err.strip().endswith("cnnbench: terminated (SIGTERM)")
    (run,) = ws.runs()
    assert run.info.status == "KILLED" and "interrupted" in run.data.tags["cnnbench.end"]


def _runs_if_any(ws: Workspace):
    try:
        return ws.runs()
    except Exception:  # the store may not have its tables yet
        return []


def test_a_crash_inside_training_marks_the_run_failed(ws, monkeypatch):
    from launchers import single
    from train.engine import loop

    def broken_evaluate(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(loop, "evaluate", broken_evaluate)
    monkeypatch.chdir(ws.root)
    with pytest.raises(RuntimeError, match="exploded"):
        single.main([*ws.flags(), "--dataset", "synthetic", "--image-size", "32", "--num-classes", "10",
                     "--synthetic-train-size", "64", "--synthetic-val-size", "32", "--epochs", "1"])
    (run,) = ws.runs()
    assert run.info.status == "FAILED" and "evaluation exploded" in run.data.tags["cnnbench.end"]


@pytest.mark.parametrize("precision,channels_last", [("bf16", True), ("fp16", False), ("fp32", True)])
def test_mixed_precision_and_channels_last_train_on_cpu(ws, monkeypatch, precision, channels_last):
    from launchers import single

    monkeypatch.chdir(ws.root)
    argv = [*ws.flags(), "--dataset", "synthetic", "--image-size", "32", "--num-classes", "10",
            "--synthetic-train-size", "128", "--synthetic-val-size", "64", "--batch-size", "32",
            "--epochs", "1", "--precision", precision] + (["--channels-last"] if channels_last else [])
    assert single.main(argv) == 0
    (run,) = ws.runs()
    assert run.data.params["precision"] == precision
    assert run.data.params["channels_last"] == str(channels_last)
    assert torch.isfinite(torch.tensor(run.data.metrics["train_loss"]))


@pytest.mark.gpu
def test_bf16_channels_last_trains_on_the_gpu(ws, monkeypatch):
    from launchers import single

    monkeypatch.chdir(ws.root)
    argv = [*ws.flags(), "--device", "cuda", "--dataset", "synthetic", "--image-size", "64", "--num-classes", "10",
            "--synthetic-train-size", "512", "--synthetic-val-size", "128", "--batch-size", "64", "--epochs", "1",
            "--precision", "bf16", "--channels-last"]
    assert single.main(argv) == 0
    (run,) = ws.runs()
    assert run.data.params["device"] == "cuda" and run.info.status == "FINISHED"
    assert run.data.metrics["peak_mem_mib"] > 0


@pytest.mark.slow
def test_compiled_model_trains_and_checkpoints_plain_weights(ws):
    check_ok(ws.launch("--compile", "--dataset", "synthetic", "--image-size", "32", "--num-classes", "10",
                       "--synthetic-train-size", "128", "--synthetic-val-size", "64", "--batch-size", "64",
                       "--epochs", "1"))
    (run,) = ws.runs()
    assert run.info.status == "FINISHED" and run.data.params["compile"] == "True"
    assert not any(k.startswith("_orig_mod") for k in final_weights(ws))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed raise, on purpose
def test_a_sigterm_that_python_swallows_is_raised_at_the_next_step(monkeypatch):
    """A signal landing in a garbage-collection callback has its exception printed and dropped by Python; the
    training loop raises it at the next step instead of training on."""
    import gc
    import os
    import weakref

    from train.engine import signals
    from train.errors import Terminated

    monkeypatch.setattr(signals, "_received", None)
    previous = signal.getsignal(signal.SIGTERM)
    signals.raise_on_sigterm()
    try:
        class Resource:
            pass

        resource = Resource()
        weakref.finalize(resource, os.kill, os.getpid(), signal.SIGTERM)  # the handler runs inside the callback
        del resource
        gc.collect()  # "Exception ignored in: <finalize object ...>": the raise is lost here ...
        with pytest.raises(Terminated):
            signals.raise_if_terminated()  # ... and raised where the loop asks, before its next step
    finally:
        signal.signal(signal.SIGTERM, previous)
