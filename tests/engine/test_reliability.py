"""Nothing is lost: a killed worker, a tracking server that goes away, a loss that turns NaN, a full disk."""
from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from benchmarks._processes import free_port
from tests.engine.test_tracking_server import wait_until_healthy
from tests.workspace import BIN, DDP, REPO, Workspace, kill_tree
from train.engine.outbox import OUTBOX_NAME

SYNTHETIC = ["--dataset", "synthetic", "--image-size", "32", "--num-classes", "10", "--batch-size", "16",
             "--synthetic-val-size", "33"]


def wait_for_epoch(ws: Workspace, epoch: int, proc: subprocess.Popen, experiment: str = "cnnbench",
                   timeout_s: float = 600) -> None:
    """Until the job's MLflow run (read from its store) has ``epoch``'s validation error."""
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


def torchrun_job(ws: Workspace, experiment: str, *flags: str) -> tuple[list[str], subprocess.Popen]:
    """A 2-rank DDP job under torchrun with one restart allowed (no second chance: a restart must join), started;
    its command line and process."""
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--max-restarts=1", str(DDP),
                *ws.flags(), "--device", "cpu", "--threads", "1", *SYNTHETIC, "--seed", "1", *flags]
    job = subprocess.Popen([*torchrun, "--experiment", experiment], cwd=ws.root, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    return torchrun, job


def finish(job: subprocess.Popen) -> str:
    """The job's output once it ends; a job that does not end is killed, with its workers."""
    try:
        output = job.communicate(timeout=900)[0]
    finally:
        kill_tree(job.pid)
    assert job.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_a_job_killed_before_its_first_checkpoint_stays_one_run(ws):
    _, job = torchrun_job(ws, "early", "--synthetic-train-size", "1536", "--epochs", "2")
    try:
        deadline = time.monotonic() + 600
        while not list((ws.root / "ckpt").glob("torchrun-*.run")):  # rank 0 has noted the job's run
            assert job.poll() is None and time.monotonic() < deadline, "the job never opened its run"
            time.sleep(0.1)
        rank_process(job, 1).send_signal(signal.SIGKILL)  # in epoch 1, before any checkpoint
    finally:
        output = finish(job)
    assert "no checkpoint yet: from epoch 1" in output
    (run,) = ws.runs("early")
    assert run.info.status == "FINISHED"
    for name in ("val_top1_err", "train_loss"):
        assert [m.step for m in ws.history(run.info.run_id, name)] == [1, 2], name


def agent_store(port: int):
    """The key-value store a torchrun agent serves its workers: one for the whole job, restarts included."""
    from torch.distributed import TCPStore

    return TCPStore("127.0.0.1", port, None, True, timeout=datetime.timedelta(seconds=60), wait_for_workers=False)


def torchrun_environment(port: int, rank: int, restart: int) -> dict:
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True",
            "TORCHELASTIC_RESTART_COUNT": str(restart)}


def test_the_workers_of_a_restart_join_whichever_starts_first():
    port = free_port()
    store = agent_store(port)  # noqa: F841 (serves while the test runs)

    def one_round(restart: int, delays: tuple[float, float]) -> list[tuple[int, str]]:
        ranks = [subprocess.Popen([sys.executable, str(REPO / "tests" / "engine" / "join_worker.py"), str(delay)],
                                  env=torchrun_environment(port, rank, restart), cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for rank, delay in enumerate(delays)]
        try:
            return [(p.returncode, out) for p in ranks for out in [p.communicate(timeout=180)[0]]]
        finally:
            for p in ranks:
                kill_tree(p.pid)

    # the workers of the first round are killed and leave their keys in the store; in the second round (the
    # restart), rank 1 comes 3 s after rank 0
    for restart, delays in ((0, (0, 0)), (1, (0, 3))):
        results = one_round(restart, delays)
        killed = -signal.SIGKILL
        assert [(code, out.strip().splitlines()[-1]) for code, out in results] == [(killed, "2")] * 2, results


@pytest.mark.parametrize("peer", ["no store at MASTER_ADDR:MASTER_PORT", "rank 0 never starts"])
def test_a_rank_that_cannot_join_stops_within_its_connect_timeout_in_one_line(ws, peer):
    port = free_port()
    store = agent_store(port) if peer == "rank 0 never starts" else None  # noqa: F841
    proc = ws.command([sys.executable, str(DDP), *ws.flags(), *SYNTHETIC, "--device", "cpu",
                       "--connect-timeout-s", "5"], timeout=120, env=torchrun_environment(port, rank=1, restart=0))
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("cnnbench: error (rank 1): rank 1 of 2 could not join the job's process group "
                           f"(store 127.0.0.1:{port}) within 5 s: "), line


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
    try:
        wait_for_epoch(ws, 1, job)
    except BaseException:
        kill_tree(job.pid)
        raise
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
    output = finish(job)
    assert "does not answer" in output and "answers again" in output
    assert_whole(ws)
    assert not list((ws.root / "ckpt").rglob(OUTBOX_NAME))


@pytest.mark.slow
def test_server_that_never_comes_back_leaves_a_file_for_cnnbench_sync(ws, server):
    job = train_through_outage(ws, server, "--tracking-grace-s", "0")
    output = finish(job)  # training went on
    (outbox,) = (ws.root / "ckpt").rglob(OUTBOX_NAME)
    assert re.search(rf"run +\w+ \(\d+ writes pending in {re.escape(str(outbox))}; run `cnnbench sync {outbox}`\)",
                     output), output[-3000:]  # the summary, not FINISHED
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
