"""``cnnbench framework``: bad input and missing frameworks end in one line and exit code 2."""
from __future__ import annotations

import logging
import sys

import pytest

from train import cli


@pytest.fixture(autouse=True)
def keep_log_handlers():
    """``main`` points the cnnbench logger at this test's captured stderr, which closes when the test ends."""
    log = logging.getLogger("cnnbench")
    handlers, level, propagate = log.handlers[:], log.level, log.propagate
    yield
    log.handlers[:], log.level, log.propagate = handlers, level, propagate


def exit_code_and_stderr(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        cli.main(["framework", *argv])
    return stop.value.code, capsys.readouterr().err


def test_missing_mxnet_environment_names_the_setup_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNBENCH_MXNET_PYTHON", str(tmp_path / "no-venv" / "bin" / "python"))
    code, err = exit_code_and_stderr(capsys, "--framework", "mxnet", "--task", "resnet50-infer",
                                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2
    assert err.startswith("cnnbench: error: mxnet is not installed") and "bash .ci/setup-mxnet" in err
    assert err.count("\n") == 1


def test_mxnet_environment_that_cannot_load_mxnet_names_the_setup_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNBENCH_MXNET_PYTHON", sys.executable)  # a Python without mxnet
    code, err = exit_code_and_stderr(capsys, "--framework", "mxnet", "--task", "resnet50-infer",
                                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2
    assert "cannot import mxnet" in err and "bash .ci/setup-mxnet" in err
    assert err.count("\n") == 1


def test_missing_tensorflow_names_the_install_command(capsys, monkeypatch, tmp_path):
    for name in ("tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import` meets where the package is absent
    code, err = exit_code_and_stderr(capsys, "--framework", "tensorflow", "--task", "resnet50-infer",
                                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2
    assert err.startswith("cnnbench: error: tensorflow is not installed") and ".[tensorflow]" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv, says", [
    (("--framework", "pytorch", "--task", "resnet50-infer", "--epochs", "3"),
     "--epochs does not apply to --task resnet50-infer"),
    (("--framework", "pytorch", "--task", "vgg-cnn", "--steps", "3"), "--steps does not apply to --task vgg-cnn"),
    (("--framework", "caffe2", "--task", "vgg-cnn"), "invalid choice: 'caffe2'"),
    (("--framework", "pytorch", "--task", "vgg-cnn", "--data-format", "nhwc"), "invalid choice: 'nhwc'"),
])
def test_bad_flags_are_one_line_and_exit_2(capsys, argv, says):
    code, err = exit_code_and_stderr(capsys, *argv)
    assert code == 2 and says in err and err.count("\n") == 1


def test_missing_cifar_data_is_one_line_before_any_framework_starts(capsys, tmp_path):
    code, err = exit_code_and_stderr(capsys, "--framework", "pytorch", "--task", "vgg-cnn",
                                     "--data-dir", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 2 and "no cifar10 batches in" in err and err.count("\n") == 1
    assert not (tmp_path / "m.db").exists()
