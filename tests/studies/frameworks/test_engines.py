"""The three tasks on each framework, read back from MLflow through the shared schema."""
from __future__ import annotations

import json
import math

import pytest

from mlflow import MlflowClient
from tests.studies.test_suite import cnnbench
from train.engine.outbox import END_TAG
from train.models import parameter_count, resolve_model
from train.studies.frameworks.tasks import VGG_CNN

FRAMEWORKS = ("pytorch", "tensorflow", "mxnet")
# What each framework can do on a CPU: Gluon's model-zoo ResNet-50 is built NCHW only; whether TensorFlow's CPU
# convolutions take NCHW depends on its build and the CPU (2.21 with oneDNN does on this machine, older builds
# did not): None, either outcome, as long as the run says which.
RESNET50_CPU = {
    ("pytorch", "channels_first"): "measured", ("pytorch", "channels_last"): "measured",
    ("tensorflow", "channels_first"): None, ("tensorflow", "channels_last"): "measured",
    ("mxnet", "channels_first"): "measured", ("mxnet", "channels_last"): "unsupported",
}
NATIVE = {"pytorch": "channels_first", "tensorflow": "channels_last", "mxnet": "channels_first"}


def recorded(store, result):
    """The MLflow run behind a result, as any reader of the store sees it."""
    return MlflowClient(store.uri).get_run(result.run_id)


def vgg_cnn_parameters() -> int:
    """Weights and biases of the study's net, counted by hand: 3x3 convs, two 2x2 pools on 32x32 input."""
    count, channels = 0, 3
    for widths in VGG_CNN.blocks:
        for width in widths:
            count += 9 * channels * width + width
            channels = width
    side = 32 // 4
    return count + (channels * side * side + 1) * VGG_CNN.dense + (VGG_CNN.dense + 1) * 10


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_vgg_cnn_trains_one_epoch_and_logs_accuracy_and_seconds(store, framework_run, framework):
    run = recorded(store, framework_run(framework, "vgg-cnn"))
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (params["framework"], params["task"], params["outcome"]) == (framework, "vgg-cnn", "measured")
    assert params["framework_version"].startswith({"pytorch": "torch", "tensorflow": "tensorflow",
                                                   "mxnet": "mxnet"}[framework])
    assert (params["train_size"], params["val_size"]) == ("100", "17")
    assert metrics["num_params"] == vgg_cnn_parameters()  # the same net in every framework
    wrong = metrics["final_val_top1_err"] / 100 * 17  # the error is over all 17 test images: a whole count
    assert abs(wrong - round(wrong)) < 1e-6 and 0 <= round(wrong) <= 17
    assert [m.step for m in store.history(run.info.run_id, "val_top1_err")] == [1]
    assert metrics["fit_time_s"] > 0 and metrics["train_time_s"] >= metrics["fit_time_s"]
    assert metrics["train_images_per_sec"] > 0 and math.isfinite(metrics["train_loss"])


@pytest.mark.parametrize("framework, data_format", [
    # tracing Keras' ResNet-50 training step takes TensorFlow half a minute or more on 2 cores
    pytest.param(*key, marks=pytest.mark.slow) if key == ("tensorflow", "channels_last") else key
    for key in RESNET50_CPU])
def test_resnet50_train_steps_on_synthetic_data_in_both_formats(store, framework_run, framework, data_format):
    run = recorded(store, framework_run(framework, f"train-{data_format}"))
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (params["task"], params["data_format"], params["dataset"]) == ("resnet50-train", data_format, "synthetic")
    expected = RESNET50_CPU[framework, data_format]
    assert params["outcome"] == (expected or params["outcome"]) and params["outcome"] in ("measured", "unsupported")
    if params["outcome"] == "unsupported":
        assert run.data.tags[END_TAG].startswith("unsupported on CPU: ")
        assert "train_images_per_sec" not in metrics
        return
    assert metrics["train_images_per_sec"] > 0 and math.isfinite(metrics["train_loss"])
    assert "ResNet-50 v1" in params["model_variant"]
    torch_count = parameter_count(resolve_model("resnet50", "imagenet"), 10)
    assert abs(metrics["num_params"] - torch_count) / torch_count < 0.002  # model zoos differ in conv biases only


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resnet50_infer_runs(store, framework_run, framework):
    run = recorded(store, framework_run(framework, "infer"))
    params, metrics = run.data.params, run.data.metrics
    assert (params["task"], params["data_format"], params["outcome"]) == ("resnet50-infer", NATIVE[framework],
                                                                          "measured")
    assert metrics["infer_images_per_sec"] > 0
    assert "2048-d" in params["model_variant"]
    features = parameter_count(resolve_model("resnet50", "imagenet"), 1000) - (2048 + 1) * 1000  # no classifier
    assert abs(metrics["num_params"] - features) / features < 0.002


def test_a_framework_run_logs_its_timing_windows_and_its_steady_states_images_per_second(store, framework_run,
                                                                                         capsys):
    run = recorded(store, framework_run("pytorch", "vgg-cnn"))
    windows = store.history(run.info.run_id, "train_images_per_sec_window")
    assert [m.step for m in windows] == [1, 2]  # 5 steps of 20 images: 1 warm-up, then 2 windows of 2 steps
    m = run.data.metrics
    assert m["train_images_per_sec"] == m["epoch_images_per_sec"]  # one epoch: its steady-state images / seconds
    baseline = store.root / "baseline.json"  # what compare takes of the run: side A alone, saved
    code, _, _ = cnnbench(capsys, "compare", "--a-runs", run.info.run_id, "--metric", "images/s", "val-error",
                          "--save-baseline", str(baseline), "--tracking-uri", store.uri)
    samples = json.loads(baseline.read_text())["samples"]
    assert code == 0
    assert samples == {"images/s": [[m["train_images_per_sec"]]], "val-error": [[m["final_val_top1_err"]]]}
