"""Each framework's runs, made once per test session into one MLflow store and read back from it.

Tiny settings (32 px ResNet-50, batch 2, 3 steps; 100 generated CIFAR images) keep every framework's share of
the suite to seconds plus its start-up. One CPU thread per framework: the figures mean nothing here, and the
2-core machine runs other tests beside these. MXNet needs .venv-mxnet (``bash .ci/setup-mxnet``): without it its
tests skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.fakedata import write_cifar10
from tests.workspace import Workspace
from train.studies.frameworks.mxnet_engine import SETUP, mxnet_python
from train.studies.frameworks.runner import FrameworkRun, make_options, run

EXPERIMENT = "cnnbench-frameworks"
TINY = dict(batch_size=2, steps=3, image_size=32, warmup_steps=1, window_steps=1, threads=1)
CASES = {
    "vgg-cnn": ("vgg-cnn", dict(epochs=1, batch_size=20, warmup_steps=1, window_steps=2, threads=1)),
    "train-channels_first": ("resnet50-train", dict(TINY, num_classes=10, data_format="channels_first")),
    "train-channels_last": ("resnet50-train", dict(TINY, num_classes=10, data_format="channels_last")),
    "infer": ("resnet50-infer", TINY),
}


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("frameworks"))
    write_cifar10(ws.root / "data")  # 5 x 20 training images, 17 test images
    return ws


def require_mxnet() -> None:
    if mxnet_python().is_file():
        return
    message = f"no MXNet environment at {mxnet_python()}: run `{SETUP}`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def framework_run(store):
    """``framework_run(framework, case) -> FrameworkRun``, each case run once per session."""
    done: dict[tuple[str, str], FrameworkRun] = {}

    def get(framework: str, case: str) -> FrameworkRun:
        if framework == "mxnet":
            require_mxnet()
        if (framework, case) not in done:
            task, overrides = CASES[case]
            data = {"data_dir": str(store.root / "data")} if task == "vgg-cnn" else {}
            threads = torch.get_num_threads()
            try:
                done[framework, case] = run(make_options(framework, task, tracking_uri=store.uri, **data,
                                                         **overrides))
            finally:
                torch.set_num_threads(threads)  # the torch engine's --threads must not outlive its run
        return done[framework, case]

    return get
