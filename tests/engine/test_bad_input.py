"""Bad input ends in one line on stderr and exit code 2: no traceback, no run left RUNNING."""
from __future__ import annotations

import pytest

from tests.fakedata import write_cifar10, write_imagefolder
from tests.workspace import Workspace


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


CASES = {
    "truncated jpeg in the training folder": (truncated_training_jpeg, r"dog_002\.jpg: unreadable image.*--resume"),
    "empty class folder": (empty_class_folder, r"every class folder under it needs at least one image"),
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
    import re

    import torch

    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    make_args, pattern = CASES[case]
    proc = ws.launch(*make_args(ws), timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    # a fault met inside an epoch comes after the run's progress log; the error is then its last line
    assert [line for line in lines if "error:" in line] == lines[-1:], proc.stderr
    assert len(lines) == 1 or case in FOUND_DURING_TRAINING, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[-1]), lines[-1]
    assert not any(r.info.status == "RUNNING" for r in (ws.runs() if (ws.root / "mlflow.db").exists() else []))
    assert not any(r.info.status == "FINISHED" for r in ws.runs() if (ws.root / "mlflow.db").exists())
