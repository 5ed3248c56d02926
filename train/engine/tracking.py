"""MLflow logging through ``MlflowClient``, restricted to the names of ``train.engine.schema``.

Rank 0 gets an ``MlflowTracker``; every other rank a ``NullTracker`` with the same methods, so the
training loop never asks which rank it is on. A run always ends with a status that says how it
ended: FINISHED, KILLED (interrupted, or stopped by --stop-after) or FAILED, with the reason in the
``cnnbench.end`` tag.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from train.engine import outbox
from train.engine.schema import EPOCH_METRICS, PARAM_NAMES, is_declared_run_metric
from train.errors import UsageError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _undeclared(names, declared) -> list[str]:
    return sorted(set(names) - declared)


@dataclass
class RunEnd:
    """How the run will be closed when its scope exits without an exception."""

    status: str = "FINISHED"
    reason: str = "completed every epoch"


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, run_id: str | None = None, grace_s: float = 120.0):
        self.uri = uri
        self.experiment = experiment
        self.run_id = run_id
        self.grace_s = grace_s  # how long the run's end waits for an absent server before leaving a file
        self.client = None
        self.outbox = None
        self.opened = False  # set once this process has created or reopened the run
        if uri.startswith(("http://", "https://")):
            # a write that fails goes to the outbox and is retried there; MLflow's own retries (minutes of
            # back-off per write) would stall training instead
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    @contextlib.contextmanager
    def run(self, run_name: str, params: dict, config: dict, tags: dict | None = None):
        """Open the run (or reopen the resumed one), set ``tags`` on it, and yield a ``RunEnd`` the caller may change.

        Opening happens inside the guard: a signal or error that lands between the run's creation and the
        first epoch still closes it KILLED or FAILED, never leaves it RUNNING.
        """
        end = RunEnd()
        try:
            self._open(run_name, params, config, tags or {})
            yield end
        except KeyboardInterrupt:
            self._close_if_open("KILLED", "interrupted (SIGINT/SIGTERM)")
            raise
        except BaseException as err:
            self._close_if_open("FAILED", f"{type(err).__name__}: {err}"[:5000])
            raise
        self.close(end.status, end.reason)

    def _open(self, run_name: str, params: dict, config: dict, tags: dict) -> None:
        from mlflow.entities import RunTag

        from mlflow import MlflowClient  # slow to import: only rank 0 pays for it

        logging.getLogger("alembic").setLevel(logging.WARNING)
        try:
            self.client = MlflowClient(self.uri)  # a sqlite store is created (or fails) right here
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                self.opened = True
                self.outbox = outbox.Outbox(self.client, self.uri, self.run_id)
                self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
                return
            experiment_id = self._experiment_id()
        except Exception as err:  # any store error here means the store is unusable: say so once
            raise UsageError(f"cannot use MLflow tracking store {self.uri}: {type(err).__name__}: {err}") from None
        self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                             tags={"mlflow.source.name": "cnnbench", **tags}).info.run_id
        self.opened = True
        self.outbox = outbox.Outbox(self.client, self.uri, self.run_id)
        self.log_params(params)
        self.client.log_dict(self.run_id, config, "config.json")

    def probe(self, timeout_s: float = 5.0) -> str | None:
        """Why the store cannot be used, or None. Quick: MLflow's own client retries an absent server for minutes."""
        if self.uri.startswith(("http://", "https://")):
            import urllib.request

            try:
                with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout_s):
                    return None
            except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
                return f"MLflow tracking server {self.uri} cannot be reached: {getattr(err, 'reason', err)}"
        return None  # a database or file store is created, or refused, when the run opens

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found else self.client.create_experiment(self.experiment)

    def log_params(self, params: dict) -> None:
        bad = _undeclared(params, PARAM_NAMES)
        if bad:
            raise ValueError(f"params not declared in train.engine.schema: {bad}")
        self.outbox.send(outbox.batch(params={k: str(v) for k, v in params.items()}))

    def log_metrics(self, metrics: dict, step: int) -> None:
        bad = _undeclared(metrics, EPOCH_METRICS) if step > 0 else sorted(
            name for name in metrics if not is_declared_run_metric(name))
        if bad:
            raise ValueError(f"metrics not declared in train.engine.schema for this step: {bad}")
        now = int(time.time() * 1000)
        self.outbox.send(outbox.batch(metrics=[(k, float(v), now, step) for k, v in metrics.items()]))

    def ensure_logged(self, metrics: dict, step: int) -> None:
        """Log an epoch's metrics unless the store has them already (a resumed job's last checkpointed epoch)."""
        if not metrics:
            return
        try:
            logged = {m.step for m in self.client.get_metric_history(self.run_id, next(iter(metrics)))}
        except Exception:  # store down: queue them; a duplicate is better than a gap
            logged = set()
        if step not in logged:
            self.log_metrics(metrics, step)

    def keep_undelivered_in(self, folder: Path) -> None:
        """Where writes the store does not take are kept for ``cnnbench sync`` (the run's checkpoint folder)."""
        self.outbox.path = folder / outbox.OUTBOX_NAME
        self.outbox.flush()

    def close(self, status: str, reason: str, grace_s: float | None = None) -> None:
        self.outbox.send(outbox.end(status, reason))
        self.outbox.drain(self.grace_s if grace_s is None else grace_s)

    def _close_if_open(self, status: str, reason: str) -> None:
        if self.opened:  # no waiting for an absent server here: a killed job has seconds left, not minutes
            self.close(status, reason, grace_s=0)


class NullTracker:
    """What ranks other than 0 get: the tracker's interface, doing nothing."""

    run_id = None

    def probe(self) -> None:
        return None

    @contextlib.contextmanager
    def run(self, run_name: str, params: dict, config: dict, tags: dict | None = None):
        yield RunEnd()

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass

    def ensure_logged(self, metrics: dict, step: int) -> None:
        pass

    def keep_undelivered_in(self, folder: Path) -> None:
        pass


def make_tracker(is_main: bool, uri: str, experiment: str, run_id: str | None, grace_s: float = 120.0):
    return MlflowTracker(uri, experiment, run_id, grace_s) if is_main else NullTracker()


def system_metrics_on(setting: bool | None, world_size: int) -> bool:
    """--system-metrics / --no-system-metrics; by default on for multi-process jobs."""
    return world_size > 1 if setting is None else setting


RUN_ID_CHARS = 64  # MLflow's run ids are 32 hex digits; room to spare


@contextlib.contextmanager
def record_system_metrics(dist, run_id: str | None, uri: str, on: bool, resumed: bool):
    """MLflow's own system-metrics monitor (CPU, memory, disk, network; with nvidia-ml-py GPU utilisation, memory
    and power) in one process per node, local rank 0, as ``system/<host name>/...``, every
    $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's default 10). Stopped before the run is closed."""
    if on and dist.ctx.world_size > 1:
        run_id = _shared_run_id(dist, run_id)
    if not (on and dist.ctx.local_rank == 0):
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, node_id=socket.gethostname(), tracking_uri=uri, resume_logging=resumed)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _shared_run_id(dist, run_id: str | None) -> str:
    """Rank 0's run id on every rank: its characters' codes summed with every other rank's zeros."""
    import torch

    codes = torch.zeros(RUN_ID_CHARS, dtype=torch.float64, device=dist.ctx.device)
    if run_id is not None:
        codes[:len(run_id)] = torch.tensor([ord(c) for c in run_id], dtype=torch.float64)
    return "".join(chr(int(c)) for c in dist.all_reduce_sum(codes).tolist() if c)


def open_store(uri: str):
    """An ``MlflowClient`` for reading the runs of ``uri``; a store that cannot be used is a UsageError."""
    from mlflow import MlflowClient

    problem = MlflowTracker(uri, experiment="").probe()  # fails fast where MLflow would retry for minutes
    if problem:
        raise UsageError(problem)
    for chatty in ("alembic", "mlflow.store.db.utils"):  # they announce every new sqlite store at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # MLflow opens a store lazily: open it here
    except Exception as err:  # any store error here means the store is unusable: say so once
        raise UsageError(f"cannot use MLflow tracking store {uri}: {type(err).__name__}: {err}") from None
    return client


def search_all_runs(client, experiment_id: str, filter_string: str = "") -> list:
    """Every run of the experiment that matches ``filter_string``, across MLflow's result pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs
