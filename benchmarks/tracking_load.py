"""The tracking record under load and faults: concurrent training jobs log to the project's own PostgreSQL-backed
MLflow server (mlflow/postgres.sh + mlflow/server.sh on 127.0.0.1), which is SIGKILLed and started again while
they run. Then every job's run must exist once, FINISHED, with every epoch metric exactly once and its run-level
figures; no outbox file may be left and nothing may land in ./mlruns of the jobs' working directory.

Prints jobs, writes (as the jobs count them), server restarts, writes retried (delivered after an outage),
writes lost (missing from the store or left in an outbox file: must be 0), duplicated ones, and the wall time;
exits 1 when any promise is broken. Loopback only; the cluster, server and jobs live in a temporary folder and
are all stopped at the end (also on an error or Ctrl-C); jobs still running after --timeout-s are killed.

  python benchmarks/tracking_load.py                                  # 8 jobs (2 of them DDP, 2 ranks), 3 epochs
  python benchmarks/tracking_load.py --jobs 3 --ddp-jobs 1 --epochs 2

Each job: resnet-20 on 1024 synthetic 32x32 images, batch 32, one CPU thread per process, --tracking-grace-s 300.
Each restart comes once every job has opened its run (the first) or after --up-s seconds of service (the next);
the server stays down at least --down-s seconds and until a job has found it gone, so that every restart costs
writes a retry. The server runs 1 request worker (mlflow/server.sh's WORKERS) to spare this CPU.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._processes import free_port, kill_tree  # noqa: E402
from train.engine.outbox import OUTBOX_NAME, read_outbox  # noqa: E402
from train.engine.schema import EPOCH_METRICS, WINDOW_METRICS  # noqa: E402

EXPERIMENT = "tracking-load"
JOB_TAG = "cnnbench.load_job"
RUN_FIGURES = ("num_params", "flops_per_image", "best_val_top1_err", "final_val_top1_err", "final_val_top5_err",
               "train_time_s")
DELIVERED = re.compile(r"MLflow: all (\d+) writes of run \w+ delivered to \S+ \((\d+) after a retry\)")
GONE = "does not answer"  # what a job logs when the first write fails


class TrackingServer:
    """mlflow/postgres.sh's cluster under mlflow/server.sh, both on 127.0.0.1, in ``root``."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"
        self.pg_env = {**os.environ, "DATA": str(root / "pg"), "PORT": str(free_port())}
        started = subprocess.run(["bash", str(REPO / "mlflow" / "postgres.sh"), "start"], env=self.pg_env,
                                 capture_output=True, text=True, timeout=180)
        if started.returncode:
            raise RuntimeError(f"mlflow/postgres.sh start failed: {started.stderr.strip()}")
        self.backend = started.stdout.strip()

    def start(self) -> None:
        env = {**os.environ, "BACKEND": self.backend, "PORT": str(self.port), "WORKERS": "1",
               "ARTIFACTS": str(self.root / "artifacts")}
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "server.sh")], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the tracking server did not start: see {self.root / 'server.log'}")
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """An outage, not a shutdown: SIGKILL to the server and its workers."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)

    def close(self) -> None:
        self.kill()
        subprocess.run(["bash", str(REPO / "mlflow" / "postgres.sh"), "stop"], env=self.pg_env,
                       capture_output=True, timeout=120)


def job_command(index: int, ddp: bool, epochs: int, url: str, work: Path) -> list[str]:
    flags = ["--dataset", "synthetic", "--image-size", "32", "--num-classes", "10", "--synthetic-train-size", "1024",
             "--synthetic-val-size", "64", "--batch-size", "32", "--epochs", str(epochs), "--threads", "1",
             "--workers", "0", "--device", "cpu", "--tracking-uri", url, "--experiment", EXPERIMENT,
             "--checkpoint-dir", str(work / f"ckpt-{index}"), "--tracking-grace-s", "300",
             "--run-name", f"load-{index}", "--tag", f"{JOB_TAG}={index}"]
    if ddp:
        return [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2",
                str(REPO / "launchers" / "ddp.py"), *flags]
    return [sys.executable, str(REPO / "launchers" / "single.py"), *flags]


@dataclass
class Load:
    jobs: int
    ddp_jobs: int
    epochs: int
    writes: int = 0
    retried: int = 0
    lost: int = 0
    duplicated: int = 0
    downtimes: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def run_load(jobs: int, ddp_jobs: int, epochs: int, restarts: int = 2, root: Path | None = None,
             down_s: float = 5.0, up_s: float = 5.0, timeout_s: float = 900.0) -> Load:
    """Start the server and the jobs, restart the server ``restarts`` times while they run, then audit the record."""
    root = Path(root or tempfile.mkdtemp(prefix="cnnbench-load-"))  # not under a private tmp: see below
    root.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach its folder
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    load = Load(jobs, ddp_jobs, epochs)
    started = time.monotonic()
    server = TrackingServer(root)
    procs: list[subprocess.Popen] = []
    try:
        server.start()
        logs = [work / f"job-{i}.log" for i in range(jobs)]
        for i, log in enumerate(logs):
            with open(log, "w") as out:
                procs.append(subprocess.Popen(job_command(i, i < ddp_jobs, epochs, server.url, work), cwd=work,
                                              stdout=out, stderr=subprocess.STDOUT))
        deadline = started + timeout_s
        for k in range(restarts):
            if k == 0:
                _wait(lambda: _runs_opened(server.url) >= jobs or _all_ended(procs), deadline)
            else:
                _wait(lambda: _all_ended(procs), min(deadline, time.monotonic() + up_s))
            if _all_ended(procs):
                load.problems.append(f"the jobs ended before restart {k + 1}")
                break
            gone = sum(log.read_text(errors="replace").count(GONE) for log in logs)
            down_at = time.monotonic()
            server.kill()
            time.sleep(down_s)
            _wait(lambda: sum(log.read_text(errors="replace").count(GONE) for log in logs) > gone
                  or _all_ended(procs), min(deadline, time.monotonic() + 120))
            server.start()
            load.downtimes.append(time.monotonic() - down_at)
        _wait(lambda: _all_ended(procs), deadline)
        for i, proc in enumerate(procs):
            if proc.poll() is None:
                load.problems.append(f"job {i} still running after {timeout_s:g} s: killed")
            elif proc.returncode:
                load.problems.append(f"job {i} exited {proc.returncode} ({_last_line(logs[i])}): see {logs[i]}")
        for log in logs:
            for writes, retried in DELIVERED.findall(log.read_text(errors="replace")):
                load.writes += int(writes)
                load.retried += int(retried)
        _audit(load, server.url, work)
    finally:
        for proc in procs:
            kill_tree(proc.pid)
        server.close()
        load.wall_s = time.monotonic() - started
    return load


def _wait(done, deadline: float) -> None:
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)


def _last_line(log: Path) -> str:
    """The job's last words (its one-line error, or the last traceback line): the log may not outlive the test."""
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1][:500] if lines else "no output"


def _all_ended(procs) -> bool:
    return all(p.poll() is not None for p in procs)


def _runs_opened(url: str) -> int:
    from mlflow import MlflowClient

    try:
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        return len(client.search_runs([experiment.experiment_id])) if experiment else 0
    except Exception:  # the server is starting, or busy: ask again
        return 0


def _audit(load: Load, url: str, work: Path) -> None:
    """Every job's run once, FINISHED, every epoch metric once per epoch, the run-level figures; nothing left."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    per_job = Counter(run.data.tags.get(JOB_TAG) for run in runs)
    epoch_keys = {key for run in runs for key in run.data.metrics} & EPOCH_METRICS
    for i in range(load.jobs):
        if per_job[str(i)] != 1:
            load.problems.append(f"job {i} has {per_job[str(i)]} runs")
    for run in runs:
        name = f"run {run.info.run_id} (job {run.data.tags.get(JOB_TAG)})"
        if run.info.status != "FINISHED":
            load.problems.append(f"{name} is {run.info.status}")
        for key in sorted(epoch_keys | (set(run.data.metrics) & WINDOW_METRICS)):
            steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
            expected = range(1, load.epochs + 1) if key in EPOCH_METRICS else steps
            load.lost += sum(1 for step in expected if steps[step] == 0)
            load.duplicated += sum(n - 1 for n in steps.values() if n > 1)
        load.lost += sum(1 for figure in RUN_FIGURES if figure not in run.data.metrics)
    for outbox in work.rglob(OUTBOX_NAME):
        load.lost += len(read_outbox(outbox)[1])
        load.problems.append(f"outbox file left: {outbox}")
    if (work / "mlruns").exists():
        load.problems.append(f"artifacts landed in {work / 'mlruns'}")
    if load.lost or load.duplicated:
        load.problems.append(f"{load.lost} writes lost, {load.duplicated} duplicated")


def report(load: Load) -> str:
    single = load.jobs - load.ddp_jobs
    downs = ", ".join(f"{d:.1f} s" for d in load.downtimes)
    return "\n".join([
        "tracking under load and faults: PostgreSQL-backed MLflow server on 127.0.0.1",
        f"  jobs               {load.jobs} ({single} single-process, {load.ddp_jobs} DDP with 2 ranks), "
        f"{load.epochs} epochs each",
        f"  writes             {load.writes}",
        f"  server restarts    {len(load.downtimes)} (SIGKILL; down {downs})",
        f"  writes retried     {load.retried}",
        f"  writes lost        {load.lost}",
        f"  writes duplicated  {load.duplicated}",
        f"  wall time          {load.wall_s:.1f} s",
        *(f"  PROBLEM: {p}" for p in load.problems),
        "  every run once, FINISHED, whole; no outbox left; nothing in ./mlruns: "
        f"{'yes' if not load.problems else 'NO'}",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=8, help="concurrent training jobs (default: 8)")
    p.add_argument("--ddp-jobs", type=int, default=2, help="how many of them are 2-rank DDP jobs (default: 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per job (default: 3)")
    p.add_argument("--restarts", type=int, default=2, help="server restarts while the jobs run (default: 2)")
    p.add_argument("--down-s", type=float, default=5.0, help="least seconds the server stays down (default: 5)")
    p.add_argument("--up-s", type=float, default=5.0, help="seconds of service between restarts (default: 5)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="jobs still running then are killed (default: 900)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cnnbench-load-"))
    load = run_load(args.jobs, args.ddp_jobs, args.epochs, args.restarts, root, args.down_s, args.up_s,
                    args.timeout_s)
    print(report(load))
    if load.problems:
        print(f"  logs kept in {root / 'work'} and {root / 'server.log'}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
