"""DDP (torchrun) and Horovod (horovodrun) drive the one engine: exact evaluation across ranks, nodes that meet over
c10d, bad input under torchrun. The numbers each launcher ends with are held in test_equivalence.py."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from benchmarks._processes import free_port
from tests.fakedata import write_cifar10, write_imagefolder
from tests.workspace import BIN, REPO, Workspace, check_ok

SMALL_SYNTHETIC = ["--dataset", "synthetic", "--image-size", "32", "--num-classes", "10",
                   "--synthetic-train-size", "128", "--synthetic-val-size", "33", "--epochs", "1"]


def only_run(ws: Workspace, experiment: str):
    runs = ws.runs(experiment)
    assert len(runs) == 1, f"{len(runs)} runs in experiment {experiment}"
    return runs[0]


def evaluate_with(ws: Workspace, nproc: int, data: str) -> dict:
    proc = check_ok(ws.command([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}",
                                str(REPO / "tests" / "engine" / "eval_worker.py"), data, "4"], timeout=300))
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_evaluation_counts_every_image_once_on_one_and_two_ranks(ws):
    data = str(write_cifar10(ws.root / "data", test=17))  # 17 = 9 + 8 over two ranks: shares differ
    one, two = evaluate_with(ws, 1, data), evaluate_with(ws, 2, data)
    assert (one["local_images"], two["local_images"]) == (17, 9)
    assert two["val_top1_err"] == one["val_top1_err"]
    assert two["val_top5_err"] == one["val_top5_err"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-6)  # float32 logits of other batchings


EXIT_WORKER = """
import torch
from train.engine.distributed import torchrun_ddp

dist = torchrun_ddp("gloo", "cpu", sync_bn=False)
import torchvision  # what a run's data loaders and models import once the group is up
dist.all_reduce_sum(torch.ones(3))
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_that_import_the_models_after_joining_exit_cleanly(ws):
    # torch 2.14 aborted such a rank at exit in about 4 runs of 10: ten clean runs in a row would be a 0.6 % fluke
    worker = ws.root / "exit_worker.py"
    worker.write_text(EXIT_WORKER)
    for _ in range(10):
        check_ok(ws.command([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(worker)], timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)}))


@pytest.mark.slow
def test_two_nodes_rendezvous_on_loopback_into_one_run(ws):
    rendezvous = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                  "--rdzv-id=two-nodes")
    nodes = [subprocess.Popen([str(BIN / "torchrun"), *rendezvous, "--nproc_per_node=1", str(REPO / "launchers" /
                                                                                             "ddp.py"),
                               *ws.flags(), "--device", "cpu", "--threads", "1", *SMALL_SYNTHETIC, "--batch-size", "16",
                               "--lr", "0.05", "--lr-scaling", "linear"],
                              cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    run = only_run(ws, "cnnbench")
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2" and run.data.params["launcher"] == "ddp"
    assert run.data.params["val_size"] == "33" and run.data.params["global_batch_size"] == "32"
    assert float(run.data.params["lr_scaled"]) == pytest.approx(0.1)  # 0.05 for one process's batch, 2 processes


def assert_one_line_exit_2(proc: subprocess.CompletedProcess, pattern: str, ws: Workspace) -> None:
    """Under torchrun: the workers' error once, their exit code 2 named by torchrun, no traceback of ours."""
    ours = [line for line in proc.stderr.splitlines() if line.startswith("cnnbench: error")]
    assert len(ours) == 1, proc.stderr[-3000:]
    assert re.search(pattern, ours[0]), ours[0]
    assert "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
    assert f'File "{REPO}/train' not in proc.stderr and "[rank" not in proc.stderr, proc.stderr[-3000:]
    assert all(run.info.status != "RUNNING" for run in ws.runs())


@pytest.mark.parametrize("args, pattern", [
    (["--global-batch-size", "15"], r"--global-batch-size 15 cannot be split evenly over 2 processes"),
    (["--device", "cuda"], r"no usable CUDA device"),
    (["--global-batch-size", "32", "--batch-size", "16"], r"not both"),
    (["--tracking-uri", "http://127.0.0.1:9"], r"tracking server http://127.0.0.1:9 cannot be reached"),
    (["--arch", "resnet-111"], r"unknown arch 'resnet-111'"),
    (["--sync-bn"], r"--sync-bn needs CUDA devices"),
], ids=["batch cannot be split", "both batch flags", "rank without a device", "tracking server unreachable", "unknown arch",
        "sync-bn on CPU"])
def test_bad_input_under_torchrun(ws, args, pattern):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA devices")
    proc = ws.torchrun(2, *SMALL_SYNTHETIC, *args, timeout=300)
    assert_one_line_exit_2(proc, pattern, ws)


@pytest.mark.slow
def test_a_corrupt_image_only_rank_1_reads_is_what_the_job_prints_and_its_run_records(ws):
    root = write_imagefolder(ws.root / "images", train_per_class=2, val_per_class=2, widths=(8, 13), heights=(8, 13))
    victim = root / "val" / "cat" / "cat_001.jpg"  # validation image 1 of 6: rank 1's (ranks take every other one)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    proc = ws.torchrun(2, "--dataset", "imagenet", "--arch", "resnet18", "--data-dir", str(root), "--batch-size", "2",
                       "--epochs", "1", timeout=300)
    named = f"rank 1: {victim}: unreadable image"
    assert_one_line_exit_2(proc, rf"^cnnbench: error: {re.escape(named)} \(.*\); fix or remove it; once that is "
                                 rf"mended, start the run again \(no epoch was checkpointed yet\)$", ws)
    assert "Connection closed" not in proc.stderr, proc.stderr[-3000:]
    run = only_run(ws, "cnnbench")
    assert run.info.status == "FAILED" and run.data.tags["cnnbench.end"].startswith(f"UsageError: {named}")


def test_ddp_launcher_outside_torchrun_says_how_to_start_it(ws):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = ws.command([sys.executable, str(REPO / "launchers" / "ddp.py"), *ws.flags()], timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "torchrun --nproc_per_node" in proc.stderr


def test_horovod_launcher_without_horovod_says_how_to_build_it(ws):
    hide_horovod = ("import runpy, sys; sys.modules['horovod'] = None; "  # makes `import horovod` fail
                    f"sys.argv = [{str(REPO / 'launchers' / 'horovod.py')!r}, *sys.argv[1:]]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = ws.command([sys.executable, "-c", hide_horovod, *ws.flags()], timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "bash .ci/build-horovod" in proc.stderr
