"""Bad input ends in one line on stderr and exit code 2: no traceback, no run left RUNNING."""
from __future__ import annotations

import atexit
import http.server
import os
import re
import runpy
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.fakedata import write_cifar10, write_imagefolder
from tests.workspace import SINGLE, Workspace


def corrupt_cifar(ws: Workspace) -> list[str]:
    data = write_cifar10(ws.root / "data")
    (data / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage, not a pickle")
    return ["--dataset", "cifar10", "--data-dir", str(data)]


def data_dir_is_a_file(ws: Workspace) -> list[str]:
    (ws.root / "afile").write_text("not a folder")
    return ["--dataset", "cifar10", "--data-dir", str(ws.root / "afile")]


def truncated_training_jpeg(ws: Workspace) -> list[str]:
    root = write_imagefolder(ws.root / "images")
    victim = sorted((root / "train" / "dog").glob("*.jpg"))[2]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return ["--dataset", "imagenet", "--data-dir", str(root), "--arch", "resnet18", "--workers", "1",
            "--batch-size", "6", "--epochs", "1"]


def empty_class_folder(ws: Workspace) -> list[str]:
    root = write_imagefolder(ws.root / "images")
    for image in (root / "train" / "fish").glob("*.jpg"):
        image.unlink()
    return ["--dataset", "imagenet", "--data-dir", str(root), "--arch", "resnet18"]


def checkpoint_of_another_arch(ws: Workspace) -> list[str]:
    done = ws.launch("--epochs", "1", "--batch-size", "256", "--experiment", "setup")
    assert done.returncode == 0, done.stderr
    return ["--resume", str(next((ws.root / "ckpt").rglob("epoch-0001.pt"))), "--arch", "resnet-32"]


def empty_cifar_batches(ws: Workspace) -> list[str]:
    import pickle

    import numpy as np

    data = write_cifar10(ws.root / "data")
    for batch in (data / "cifar-10-batches-py").glob("*_batch*"):  # valid batches holding no image
        batch.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    return ["--dataset", "cifar10", "--data-dir", str(data)]


_TRAINED: list[Path] = []  # the workspace of the one run the resume cases start from, once trained


def trained_checkpoint(ws: Workspace):
    """The epoch-1 checkpoint of a run stopped after it (trained once per session, then copied into ``ws``), and the
    run's id."""
    if not _TRAINED:
        first = Workspace(Path(tempfile.mkdtemp(prefix="cnnbench-trained-")))
        atexit.register(shutil.rmtree, first.root, True)
        done = first.launch("--epochs", "2", "--stop-after", "1", "--steps", "2", "--batch-size", "64",
                            "--experiment", "setup")
        assert done.returncode == 0, done.stderr
        _TRAINED.append(first.root)
    for name in ("mlflow.db", "ckpt", "mlartifacts"):
        (shutil.copytree if (_TRAINED[0] / name).is_dir() else shutil.copy)(_TRAINED[0] / name, ws.root / name)
    path = next((ws.root / "ckpt").rglob("epoch-0001.pt"))
    return path, path.parent.name


def checkpoint_without_its_state(ws: Workspace) -> list[str]:
    import torch

    path, _ = trained_checkpoint(ws)
    payload = torch.load(path, weights_only=True)
    del payload["state"]
    torch.save(payload, path)
    return ["--resume", str(path)]


def checkpoint_with_a_tensor_of_another_shape(ws: Workspace) -> list[str]:
    import torch

    path, _ = trained_checkpoint(ws)
    payload = torch.load(path, weights_only=True)
    payload["model"]["fc.weight"] = torch.zeros(3, 64)  # resnet-20's head on digits is 10 x 64
    torch.save(payload, path)
    return ["--resume", str(path)]


def checkpoint_of_a_deleted_run(ws: Workspace) -> list[str]:
    from mlflow import MlflowClient

    path, run_id = trained_checkpoint(ws)
    MlflowClient(ws.uri).delete_run(run_id)
    return ["--resume", str(path.parent)]


def _text_file(ws: Workspace, text: str):
    path = ws.root / "epoch-0001.pt"
    path.write_text(text)
    return path


CASES = {
    "truncated jpeg in the training folder": (truncated_training_jpeg, r"dog_002\.jpg: unreadable image.*fix or remove "
                                              r"it; once that is mended, start the run again \(no epoch was "
                                              r"checkpointed yet\)$"),
    "checkpoint of another arch": (checkpoint_of_another_arch, r"--arch resnet-32 differs from the checkpoint's"),
    "unknown arch": (lambda ws: ["--arch", "resnet-111"], r"unknown arch 'resnet-111'.*did you mean.*resnet-110"),
    "unknown imagenet arch": (lambda ws: ["--arch", "resnxt50", "--dataset", "synthetic"], r"did you mean"),
    "missing data dir": (lambda ws: ["--dataset", "cifar10", "--data-dir", str(ws.root / "nope")], r"nope"),
    "data dir is a file": (data_dir_is_a_file, r"afile"),
    "corrupt cifar batch": (corrupt_cifar, r"data_batch_3"),
    "missing imagenet folder": (lambda ws: ["--dataset", "imagenet", "--data-dir", str(ws.root)], r"train"),
    "zero epochs": (lambda ws: ["--epochs", "0"], r"--epochs.*must be > 0"),
    "negative epochs": (lambda ws: ["--epochs", "-3"], r"--epochs.*must be > 0"),
    "zero batch": (lambda ws: ["--batch-size", "0"], r"--batch-size.*must be > 0"),
    "negative lr": (lambda ws: ["--lr", "-0.1"], r"--lr.*must be > 0"),
    "nan lr": (lambda ws: ["--lr", "nan"], r"--lr.*must be > 0"),
    "text epochs": (lambda ws: ["--epochs", "ten"], r"--epochs.*not an integer"),
    "unknown precision": (lambda ws: ["--precision", "fp8"], r"--precision.*invalid choice"),
    "unknown dataset": (lambda ws: ["--dataset", "mnist"], r"--dataset.*invalid choice"),
    "unknown flag": (lambda ws: ["--learning-rate", "0.1"], r"unrecognized arguments"),
    "missing resume": (lambda ws: ["--resume", str(ws.root / "gone.pt")], r"gone.pt"),
    "garbage resume": (lambda ws: ["--resume", str(_garbage(ws))], r"not a readable cnnbench checkpoint"),
    "net too big for the input": (lambda ws: ["--arch", "inception_v3", "--dataset", "synthetic", "--image-size", "32",
                                              "--synthetic-train-size", "8", "--synthetic-val-size", "8"],
                                  r"cannot take 32x32"),
    "dropout on a net without": (lambda ws: ["--arch", "resnet-20", "--dropout", "0.3"], r"does not take"),
    "no cuda": (lambda ws: ["--device", "cuda"], r"no usable CUDA device"),
    "unusable tracking store": (lambda ws: ["--tracking-uri", f"sqlite:///{_garbage(ws)}/sub/mlflow.db"],
                                r"cannot use MLflow tracking store"),
    "unknown tracking scheme": (lambda ws: ["--tracking-uri", "htp://foo"], r"unknown scheme 'htp'"),
    "sqlite folder typo": (lambda ws: ["--tracking-uri", f"sqlite:///{ws.root}/nonexistent/dir/x.db"],
                           r"folder .*/nonexistent/dir does not exist"),
    "deleted experiment": (lambda ws: ["--experiment", _deleted_experiment(ws)], r"'gone' \(id \d+\) is deleted"),
}


# refused at start-up, before any run exists: run in this process (a launcher's interpreter and imports take
# 10-20 s on a busy machine)
STARTUP_CASES = {
    "cifar batches of 0 images": (empty_cifar_batches, r"cifar10 data in .* holds 0 training and 0 validation images"),
    "resume a text file": (lambda ws: ["--resume", str(_text_file(ws, "hello"))],
                           r"not a readable cnnbench checkpoint"),
    "resume a checkpoint without its state": (checkpoint_without_its_state, r"does not say where its run stands"),
    "resume a tensor of another shape": (checkpoint_with_a_tensor_of_another_shape,
                                         r"does not fit arch resnet-20: .*fc\.weight.*\[3, 64\].*\[10, 64\]"),
    "resume a deleted run": (checkpoint_of_a_deleted_run, r"run \w+ of the checkpoint is deleted in .*mlflow runs "
                                                          r"restore"),
    "dropout over 1": (lambda ws: ["--arch", "wrn-16-4", "--dropout", "1.5"], r"--dropout 1\.5 must lie in \[0, 1\)"),
    "momentum over 1": (lambda ws: ["--momentum", "2"], r"--momentum 2 must lie in \[0, 1\)"),
    "infinite lr": (lambda ws: ["--lr", "inf"], r"--lr: 'inf' is not a finite number"),
    "tracking uri with an open bracket": (lambda ws: ["--tracking-uri", "http://[::1"],
                                          r"--tracking-uri http://\[::1: not a URI \(Invalid IPv6 URL\)"),
    "tracking uri without a scheme": (lambda ws: ["--tracking-uri", "notauri"],
                                      r"--tracking-uri notauri: no scheme, so a folder to MLflow, its file store, .*"
                                      r"MLFLOW_ALLOW_FILE_STORE=true; MLflow stores are .*mssql://$"),
    "file store": (lambda ws: ["--tracking-uri", (ws.root / "mlruns").as_uri()],
                   r"--tracking-uri file:///.*/mlruns: a folder, its file store"),
    "empty tracking uri": (lambda ws: ["--tracking-uri", ""], r"--tracking-uri is empty"),
    "database server not listening": (lambda ws: ["--tracking-uri", "postgresql://u:p@127.0.0.1:1/mlflow"],
                                      r"store postgresql://127\.0\.0\.1:1 cannot be reached: Connection refused"),
    "empty class folder": (empty_class_folder, r"every class folder under it needs at least one image"),
}


FOUND_DURING_TRAINING = {"truncated jpeg in the training folder"}


def _deleted_experiment(ws: Workspace) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(ws.uri)
    client.delete_experiment(client.create_experiment("gone"))
    return "gone"


def _garbage(ws: Workspace):
    path = ws.root / "epoch-0001.pt"
    path.write_bytes(b"garbage")
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_exit_code_2(ws, case):
    import torch

    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    make_args, pattern = CASES[case]
    assert_one_line_and_exit_code_2(ws, ws.launch(*make_args(ws), timeout=300), pattern, case)


# these train a run first (once, then copied): about a minute on a busy 2-core machine
FROM_A_TRAINED_RUN = {"resume a checkpoint without its state", "resume a tensor of another shape",
                      "resume a deleted run"}


@pytest.mark.parametrize("case", [pytest.param(case, marks=[pytest.mark.slow] * (case in FROM_A_TRAINED_RUN))
                                  for case in sorted(STARTUP_CASES)])
def test_a_bad_start_gives_one_line_and_exit_code_2(ws, case, capsys):
    make_args, pattern = STARTUP_CASES[case]
    assert_one_line_and_exit_code_2(ws, launch_here(ws, capsys, *make_args(ws)), pattern, case)


def launch_here(ws: Workspace, capsys, *args: str, flags: list[str] | None = None) -> subprocess.CompletedProcess:
    """``launchers/single.py`` as ``Workspace.launch`` runs it, in this process: for bad input refused before any
    training. What a run sets process-wide (a SIGTERM handler, MLflow's environment variables) is set back."""
    from train.engine.launch import exit_on_usage_error

    main = runpy.run_path(str(SINGLE))["main"]
    sigterm, environ = signal.getsignal(signal.SIGTERM), dict(os.environ)
    try:
        exit_on_usage_error(lambda: main([*(ws.flags() if flags is None else flags), *args]))
    except SystemExit as exit:
        code = exit.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        os.environ.clear()
        os.environ.update(environ)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_a_tracking_uri_from_the_environment_is_named_as_such(ws, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "htp://x")
    proc = launch_here(ws, capsys, flags=[flag for flag in ws.flags() if flag not in ("--tracking-uri", ws.uri)])
    assert_one_line_and_exit_code_2(ws, proc, r"^cnnbench: error: MLFLOW_TRACKING_URI=htp://x: unknown scheme 'htp'",
                                    "environment")


class NotMlflow(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output is the launcher's, not this server's
        pass


def test_a_web_server_that_is_not_mlflow_is_told_apart_from_one_that_does_not_answer(ws, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)  # /health: 404 File not found
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        proc = launch_here(ws, capsys, "--tracking-uri", uri)
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line_and_exit_code_2(ws, proc, rf"{uri} answers, but not as an MLflow tracking server \({uri}/health: "
                                              rf"HTTP 404 File not found\)", "web server")


def assert_one_line_and_exit_code_2(ws: Workspace, proc, pattern: str, case: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    # a fault met inside an epoch comes after the run's progress log; the error is then its last line
    assert [line for line in lines if "error:" in line] == lines[-1:], proc.stderr
    assert len(lines) == 1 or case in FOUND_DURING_TRAINING, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[-1]), lines[-1]
    runs = ws.runs() if (ws.root / "mlflow.db").exists() else []  # reading a store that is not there would make one
    assert not any(r.info.status in ("RUNNING", "FINISHED") for r in runs)
