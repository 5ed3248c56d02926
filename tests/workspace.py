"""Running the launchers as a user would, in a temp dir with its own MLflow store, and reading the record back."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks._processes import kill_tree

REPO = Path(__file__).resolve().parents[1]
SINGLE = REPO / "launchers" / "single.py"
DDP = REPO / "launchers" / "ddp.py"
HOROVOD = REPO / "launchers" / "horovod.py"
BIN = Path(sys.executable).parent  # torchrun and horovodrun live beside the venv's python


@dataclass
class Workspace:
    """A temp dir with its own sqlite MLflow store and checkpoint folder."""

    root: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def flags(self) -> list[str]:
        return ["--tracking-uri", self.uri, "--checkpoint-dir", str(self.root / "ckpt"), "--workers", "0"]

    def launch(self, *args: str, timeout: float = 900, **popen) -> subprocess.CompletedProcess:
        return self.command([sys.executable, str(SINGLE), *self.flags(), *args], timeout, **popen)

    def torchrun(self, nproc: int, *args: str, rendezvous: tuple[str, ...] = ("--standalone",),
                 timeout: float = 900) -> subprocess.CompletedProcess:
        """``launchers/ddp.py`` under torchrun, gloo on CPU, one thread per process."""
        return self.command([str(BIN / "torchrun"), *rendezvous, f"--nproc_per_node={nproc}", str(DDP),
                             *self.flags(), "--device", "cpu", "--threads", "1", *args], timeout)

    def horovodrun(self, nproc: int, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """``launchers/horovod.py`` under horovodrun with Gloo on this host."""
        return self.command([str(BIN / "horovodrun"), "--gloo", "-np", str(nproc), "-H", f"localhost:{nproc}",
                             sys.executable, str(HOROVOD), *self.flags(), "--device", "cpu", "--threads", "1",
                             *args], timeout)

    def command(self, argv: list[str], timeout: float, **popen) -> subprocess.CompletedProcess:
        """``argv`` to its end; one still running at ``timeout`` (or when the test is stopped) is killed with every
        process it started."""
        with subprocess.Popen(argv, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              **popen) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except BaseException:
                kill_tree(proc.pid)
                raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def runs(self, experiment: str = "cnnbench"):
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name(experiment)
        return [] if exp is None else client.search_runs([exp.experiment_id])

    def history(self, run_id: str, metric: str) -> list:
        from mlflow import MlflowClient

        return sorted(MlflowClient(self.uri).get_metric_history(run_id, metric), key=lambda m: m.step)




def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
