"""Short training runs with --loader dali through the real launchers: each logs to MLflow like any other run."""
from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from tests.fakedata import write_cifar10, write_cifar100, write_imagefolder
from tests.workspace import REPO, SINGLE, Workspace, check_ok

pytest.importorskip("nvidia.dali", reason="--loader dali needs NVIDIA DALI: pip install -e '.[dali]'")

DALI = ("--loader", "dali", "--loader-threads", "2", "--prefetch", "3", "--epochs", "1", "--device", "cpu")

# data set -> (writer of its files or None, extra flags, train size, val size)
DATASETS = {
    "cifar10": (write_cifar10, ["--batch-size", "32"], "100", "17"),
    "cifar100": (write_cifar100, ["--batch-size", "32"], "60", "23"),
    "digits": (None, ["--batch-size", "128"], "1347", "450"),
    "imagenet": (write_imagefolder, ["--arch", "resnet18", "--batch-size", "8"], "18", "9"),
}


def data_flags(ws: Workspace, dataset: str) -> list[str]:
    write, extra, _, _ = DATASETS[dataset]
    where = [] if write is None else ["--data-dir", str(write(ws.root / "data"))]
    return ["--dataset", dataset, *where, *extra]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """One MLflow store for all the runs below: it is created once, not once per run."""
    return Workspace(tmp_path_factory.mktemp("dali-runs"))


def check_dali_run(ws: Workspace, dataset: str, launcher: str, world_size: int):
    (run,) = [r for r in ws.runs() if (r.data.params["dataset"], r.data.params["launcher"]) == (dataset, launcher)]
    p, m = run.data.params, run.data.metrics
    _, _, train_size, val_size = DATASETS[dataset]
    assert run.info.status == "FINISHED"
    assert (p["loader"], p["loader_threads"], p["prefetch"]) == ("dali", "2", "3")
    assert (p["train_size"], p["val_size"], p["world_size"]) == (train_size, val_size, str(world_size))
    assert 0 <= m["val_top1_err"] <= 100 and m["train_images_per_sec"] > 0 and 0 <= m["data_wait_frac"] < 1
    assert [h.step for h in ws.history(run.info.run_id, "val_top1_err")] == [1]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_single_launcher_trains_with_dali(ws, dataset):
    check_ok(ws.launch(*DALI, *data_flags(ws, dataset)))
    check_dali_run(ws, dataset, "single", world_size=1)


@pytest.mark.slow
def test_ddp_launcher_trains_with_dali_on_two_ranks(ws):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(REPO / "launchers" / "ddp.py")]
    check_ok(subprocess.run([*torchrun, *ws.flags(), *DALI, "--threads", "1", *data_flags(ws, "cifar10")],
                            cwd=ws.root, capture_output=True, text=True, timeout=600))
    check_dali_run(ws, "cifar10", "ddp", world_size=2)


def test_without_dali_the_launcher_says_so_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    ws = Workspace(tmp_path)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # what an environment without DALI makes of the import
    for module in ("dataloaders.dali", "dataloaders.dali_memory", "dataloaders.dali_folder"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "argv", [str(SINGLE), *ws.flags(), *DALI, *data_flags(ws, "cifar10")])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(SINGLE), run_name="__main__")
    assert info.value.code == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("cnnbench: error: --loader dali needs NVIDIA DALI") and "\n" not in stderr
    assert not ws.runs()
