"""The MXNet engine as the runner sees it: a proxy that runs ``mxnet_worker`` in ``.venv-mxnet`` (created by
``bash .ci/setup-mxnet``) and forwards each call as one JSON line; the arrays travel once, as an .npz file."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from train.errors import UsageError
from train.studies.frameworks.contract import Arrays, ModelInfo, TaskOptions, Unsupported

REPO = Path(__file__).resolve().parents[3]
SETUP = "bash .ci/setup-mxnet"
EXIT_TIMEOUT_S = 30


def mxnet_python() -> Path:
    """The interpreter of the MXNet environment; $CNNBENCH_MXNET_PYTHON points elsewhere."""
    return Path(os.environ.get("CNNBENCH_MXNET_PYTHON") or REPO / ".venv-mxnet" / "bin" / "python")


def _thread_env(threads: int | None) -> dict:
    return {} if threads is None else {"OMP_NUM_THREADS": str(threads)}


class WorkerError(RuntimeError):
    """The worker failed or died; its traceback, if any, is on stderr above."""


class MxnetEngine:
    def __init__(self, threads: int | None):
        python = mxnet_python()
        if not python.is_file():
            raise UsageError(f"mxnet is not installed: it runs in its own environment, and {python} is missing; "
                             f"create it with `{SETUP}`")
        self.tmp = tempfile.TemporaryDirectory(prefix="cnnbench-mxnet-")
        # PYTHONPATH is replaced, not extended: the main environment's packages must not leak into the worker
        self.worker = subprocess.Popen([str(python), "-m", "train.studies.frameworks.mxnet_worker"], cwd=REPO,
                                       env={**os.environ, "PYTHONPATH": str(REPO), **_thread_env(threads)},
                                       stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        try:
            hello = self._receive()
        except WorkerError as err:
            self.close()
            raise UsageError(f"mxnet cannot run with {python} ({err}); recreate its environment with `{SETUP}`") \
                from None
        self.framework_version = hello["framework_version"]
        self.device = "cpu"
        self.threads = "mxnet default" if threads is None else f"OMP_NUM_THREADS={threads}"

    def build(self, opts: TaskOptions, data: Arrays) -> ModelInfo:
        path = Path(self.tmp.name) / "arrays.npz"
        arrays = {k: v for k, v in vars(data).items() if v is not None}
        np.savez(path, **arrays)
        return ModelInfo(**self._call("build", options=opts.to_dict(), arrays=str(path)))

    def train_step(self, indices: np.ndarray) -> None:
        self._call("train_step", indices=indices.tolist())

    def end_train_epoch(self) -> tuple[float, float]:
        loss, accuracy = self._call("end_train_epoch")
        return loss, accuracy

    def predict_val(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._call("predict_val", indices=indices.tolist()), dtype=np.float32)

    def infer_step(self, indices: np.ndarray) -> None:
        self._call("infer_step", indices=indices.tolist())

    def _call(self, op: str, **arguments):
        self.worker.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.worker.stdin.flush()
        return self._receive()

    def _receive(self):
        line = self.worker.stdout.readline()
        if not line:
            raise WorkerError(f"the mxnet worker exited with code {self.worker.wait()}")
        reply = json.loads(line)
        if "unsupported" in reply:
            raise Unsupported(f"MXNet: {reply['unsupported']}")
        if "error" in reply:
            raise WorkerError(f"mxnet worker: {reply['error']}")
        return reply["ok"]

    def close(self) -> None:
        if self.worker.poll() is None:
            try:
                self.worker.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.worker.stdin.close()
                self.worker.wait(EXIT_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                self.worker.kill()
                self.worker.wait()
        self.worker.stdout.close()
        self.tmp.cleanup()
