"""Nothing is lost: a killed worker, a tracking server that goes away, a loss that turns NaN, a full disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from tests.engine.test_distributed import free_port
from tests.engine.test_tracking_server import wait_until_healthy
from tests.workspace import BIN, DDP, REPO, Workspace, check_ok
from train.engine.checkpoint import find_checkpoint, load_checkpoint
from train.engine.outbox import OUTBOX_NAME

SYNTHETIC = ["--dataset", "synthetic", "--image-size", "32", "--num-classes", "10", "--batch-size", "16",
             "--synthetic-val-size", "33"]


def wait_for_epoch(ws: Workspace, epoch: int, proc: subprocess.Popen, experiment: str = "cnnbench",
                   timeout_s: float = 600) -> None:
    """Until the job's MLflow run (read from the sqlite file) has ``epoch``'s validation error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended early"
        runs = ws.runs(experiment)
        if runs and any(m.step == epoch for m in ws.history(runs[0].info.run_id, "val_top1_err")):
            return
        time.sleep(0.2)
    raise TimeoutError(f"epoch {epoch} not logged within {timeout_s} s")


def rank_process(torchrun: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(torchrun.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    raise LookupError(f"no worker of rank {rank}")


def final_weights(ws: Workspace, run) -> dict:
    return load_checkpoint(find_checkpoint(str(ws.root / "ckpt" / run.info.run_id)))["model"]


@pytest.mark.slow
def test_killed_rank_is_restarted_and_the_job_ends_as_if_nothing_happened(ws):
    flags = [*SYNTHETIC, "--synthetic-train-size", "768", "--epochs", "3", "--deterministic", "--seed", "1"]
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--max-restarts=2", str(DDP),
                *ws.flags(), "--device", "cpu", "--threads", "1", *flags]
    job = subprocess.Popen([*torchrun, "--experiment", "killed"], cwd=ws.root, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    # two restarts allowed: gloo's reconnect after a restart was seen to be refused once on a loaded machine
    wait_for_epoch(ws, 1, job, "killed")
    rank_process(job, 1).send_signal(signal.SIGKILL)  # during epoch 2 of 3
    output = job.communicate(timeout=900)[0]
    assert job.returncode == 0, output[-3000:]
    assert "resuming from" in output

    check_ok(ws.command([*torchrun, "--experiment", "uninterrupted"], timeout=900))
    (killed,), (clean,) = ws.runs("killed"), ws.runs("uninterrupted")
    assert killed.info.status == "FINISHED"
    for name in ("val_top1_err", "train_loss", "train_images_per_sec"):
        assert [m.step for m in ws.history(killed.info.run_id, name)] == [1, 2, 3], name
    ours, theirs = final_weights(ws, killed), final_weights(ws, clean)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs), "weights differ from the uninterrupted job's"


def test_non_finite_loss_stops_the_run_failed_and_keeps_the_last_good_checkpoint(ws):
    # lr grows 1e30-fold after epoch 1: epoch 2's second step sees the first step's exploded weights
    proc = ws.launch(*SYNTHETIC, "--synthetic-train-size", "64", "--epochs", "3", "--schedule", "multistep",
                     "--milestones", "1", "--gamma", "1e30", "--lr", "0.01")
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cnnbench:")]
    assert lines == ["cnnbench: training stopped: epoch 2: non-finite training loss at step 2 of the epoch on "
                     "rank 0; the last good checkpoint is kept (lower --lr, or try --precision fp32)"]
    assert "Traceback" not in proc.stderr
    (run,) = ws.runs()
    assert run.info.status == "FAILED" and "non-finite" in run.data.tags["cnnbench.end"]
    assert [p.name for p in (ws.root / "ckpt" / run.info.run_id).glob("epoch-*.pt")] == ["epoch-0001.pt"]


def test_checkpoint_folder_that_cannot_be_written_stops_before_any_work(ws):
    (ws.root / "afile").write_text("")
    proc = ws.launch("--checkpoint-dir", str(ws.root / "afile" / "ckpt"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "is not writable" in proc.stderr
    assert ws.runs() == []


def test_too_little_disk_for_checkpoints_stops_before_training(ws, monkeypatch):
    import shutil

    from train.context import DistContext
    from train.engine import loop
    from train.engine.config import make_config
    from train.engine.distributed import SingleProcess
    from train.errors import RankError

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    cfg = make_config(dataset="synthetic", image_size=32, num_classes=10, synthetic_train_size=16,
                      synthetic_val_size=16, tracking_uri=ws.uri, checkpoint_dir=str(ws.root / "ckpt"), epochs=1)
    with pytest.raises(RankError, match=r"has 0 MiB free; checkpoints of this model need about \d+ MiB"):
        loop.run(cfg, SingleProcess(DistContext()))
    assert ws.runs() == []


class Server:
    """``mlflow/server.sh`` over a sqlite file the test can also read while the server is down."""

    def __init__(self, ws: Workspace):
        self.ws, self.port, self.proc = ws, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "BACKEND": self.ws.uri, "PORT": str(self.port),
               "ARTIFACTS": str(self.ws.root / "artifacts")}
        self.proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "server.sh")], env=env, cwd=self.ws.root,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        wait_until_healthy(self.url, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # an outage, not a shutdown
            self.proc.wait(timeout=60)


@pytest.fixture
def server(ws):
    s = Server(ws)
    s.start()
    yield s
    s.stop()


def train_through_outage(ws: Workspace, server: Server, *extra: str) -> subprocess.Popen:
    job = subprocess.Popen([sys.executable, str(REPO / "launchers" / "single.py"), *ws.flags(), *SYNTHETIC,
                            "--synthetic-train-size", "320", "--epochs", "4", "--threads", "1",
                            "--tracking-uri", server.url, *extra],
                           cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_epoch(ws, 1, job)
    server.stop()
    return job


def assert_whole(ws: Workspace) -> None:
    (run,) = ws.runs()
    assert run.info.status == "FINISHED"
    for name in ("val_top1_err", "train_loss", "lr"):
        assert [m.step for m in ws.history(run.info.run_id, name)] == [1, 2, 3, 4], name
    assert "final_val_top1_err" in run.data.metrics


@pytest.mark.slow
def test_server_back_during_the_run_gets_every_queued_metric(ws, server):
    job = train_through_outage(ws, server, "--tracking-grace-s", "300")
    server.start()
    output = job.communicate(timeout=900)[0]
    assert job.returncode == 0, output[-3000:]
    assert "does not answer" in output and "answers again" in output
    assert_whole(ws)
    assert not list((ws.root / "ckpt").rglob(OUTBOX_NAME))


@pytest.mark.slow
def test_server_that_never_comes_back_leaves_a_file_for_cnnbench_sync(ws, server):
    job = train_through_outage(ws, server, "--tracking-grace-s", "0")
    output = job.communicate(timeout=900)[0]
    assert job.returncode == 0, output[-3000:]  # training went on
    (outbox,) = (ws.root / "ckpt").rglob(OUTBOX_NAME)
    assert f"cnnbench sync {outbox}" in output
    (run,) = ws.runs()
    assert run.info.status == "RUNNING"  # as far as the store knows, until the file is replayed

    sync = ws.command([str(BIN / "cnnbench"), "sync", str(outbox), "--tracking-uri", ws.uri], timeout=300)
    assert sync.returncode == 0, sync.stderr
    assert_whole(ws)
    assert not outbox.exists()


def test_fp16_skipped_steps_are_counted_not_faults():
    from train.engine.builders import Step
    from train.engine.loop import NonFiniteWatch

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 60)  # far past fp16's range: the first steps overflow
    step = Step(model, torch.optim.SGD(model.parameters(), lr=0.1), scaler,
                lambda: torch.autocast("cpu", dtype=torch.float16))
    watch = NonFiniteWatch(torch.device("cpu"), scaler)
    scales = [scaler.get_scale()]
    for i in range(12):
        loss, _ = step(torch.randn(4, 8), torch.randint(3, (4,)))
        watch.observe(loss, i)
        scales.append(scaler.get_scale())
    expected = sum(after < before for before, after in zip(scales, scales[1:]))
    assert expected > 0 and watch.skipped.item() == expected
    assert watch.first.item() == -1  # not a fault
