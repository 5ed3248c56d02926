"""What a user sees when a job under torchrun or horovodrun meets bad input or SIGTERM: cnnbench's one line from the
workers, then the launcher's own report and exit code, exactly as docs/distributed.md states them (those are the
launchers' code, not cnnbench's: the docs must say what they do, not what cnnbench's own processes do)."""
from __future__ import annotations

import re
import signal
import subprocess

import pytest

from tests.engine.test_distributed import SMALL_SYNTHETIC
from tests.engine.test_reliability import SYNTHETIC, torchrun_job, wait_for_epoch
from tests.workspace import REPO, Workspace, kill_tree

DISTRIBUTED_MD = REPO / "docs" / "distributed.md"
# what docs/distributed.md says of each launcher, word for word: the tests below hold the jobs to it
TORCHRUN_BAD_INPUT = "torchrun then prints its own `ChildFailedError` traceback and failure report"
HOROVODRUN_BAD_INPUT = "horovodrun then prints `Process 0 exit with status code 2.` and its own `RuntimeError`"
TORCHRUN_SIGTERM = "torchrun's agent then raises its own `SignalException`"


def documented(sentence: str) -> bool:
    return sentence in " ".join(DISTRIBUTED_MD.read_text().split())


def our_lines(stderr: str) -> list[str]:
    """cnnbench's error lines, with the launchers' "[rank]<stderr>:" prefix taken off."""
    lines = (re.sub(r"^\[\d+\]<stderr>:", "", line) for line in stderr.splitlines())
    return [line for line in lines if line.startswith("cnnbench: error")]


def assert_ours_then_the_launchers(proc: subprocess.CompletedProcess, message: str, ws: Workspace) -> None:
    """One cnnbench line, no traceback through cnnbench's code, no run left RUNNING; the launcher exits 1."""
    assert our_lines(proc.stderr) == [f"cnnbench: error: {message}"], proc.stderr[-3000:]
    assert f'File "{REPO}/train' not in proc.stderr and f'File "{REPO}/launchers' not in proc.stderr
    assert all(run.info.status != "RUNNING" for run in ws.runs())
    assert proc.returncode == 1, proc.stderr[-3000:]  # the launcher's code for any failed worker


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--global-batch-size", "3"], "--global-batch-size 3 cannot be split evenly over 2 processes"),
    (["--checkpoint-dir", "FILE/ckpt"], "--checkpoint-dir FILE/ckpt is not writable: Not a directory"),
    (["--backend", "nccl"], "--backend nccl needs CUDA devices; use --backend gloo on CPU"),
], ids=["batch cannot be split", "unwritable checkpoint folder", "nccl on CPU"])
def test_bad_input_under_torchrun_is_rank_0s_line_then_torchruns_report_with_exitcode_2(ws, args, message):
    (ws.root / "FILE").write_text("a file, not a folder\n")
    args = [arg.replace("FILE", str(ws.root / "FILE")) for arg in args]
    proc = ws.torchrun(2, *SMALL_SYNTHETIC, *args, timeout=300)
    assert_ours_then_the_launchers(proc, message.replace("FILE", str(ws.root / "FILE")), ws)
    root_cause = proc.stderr.split("Root Cause (first observed failure):", 1)[1]
    assert re.search(r"rank\s+: 0 \(local_rank: 0\)\s+exitcode\s+: 2 ", root_cause), proc.stderr[-3000:]
    assert documented(TORCHRUN_BAD_INPUT)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--global-batch-size", "5"], "--global-batch-size 5 cannot be split evenly over 2 processes"),
    (["--arch", "resnet-21"], "unknown arch 'resnet-21'"),
    (["--precision", "fp16"], "--precision fp16 is not supported with Horovod here; use bf16 or fp32"),
], ids=["batch cannot be split", "unknown arch", "fp16"])
def test_bad_input_under_horovodrun_is_rank_0s_line_then_horovodruns_report(ws, args, message):
    proc = ws.horovodrun(2, *SMALL_SYNTHETIC, *args, timeout=300)
    (line,) = our_lines(proc.stderr)
    assert line.startswith(f"cnnbench: error: {message}"), proc.stderr[-3000:]
    assert_ours_then_the_launchers(proc, line.removeprefix("cnnbench: error: "), ws)
    assert "Process 0 exit with status code 2." in proc.stdout and "Exit code: 2" in proc.stderr  # its stdout too
    assert documented(HOROVODRUN_BAD_INPUT)


@pytest.mark.slow
def test_sigterm_to_torchrun_closes_the_run_killed_with_its_checkpoint_then_torchrun_exits_1(ws):
    _, job = torchrun_job(ws, "stopped", "--synthetic-train-size", "256", "--epochs", "20")
    try:
        wait_for_epoch(ws, 1, job, "stopped")
        job.send_signal(signal.SIGTERM)
        output = job.communicate(timeout=300)[0]
    finally:
        kill_tree(job.pid)
    (run,) = ws.runs("stopped")
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["cnnbench.end"], run.data.tags
    assert list((ws.root / "ckpt" / run.info.run_id).glob("*epoch*")), "no checkpoint kept"
    assert "cnnbench: terminated (SIGTERM)" in output
    assert "SignalException" in output and f'File "{REPO}/train' not in output, output[-3000:]
    assert job.returncode == 1, output[-3000:]  # torchrun's agent, not 143
    assert documented(TORCHRUN_SIGTERM)
