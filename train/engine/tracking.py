"""MLflow logging through ``MlflowClient``, restricted to the names of ``train.engine.schema``.

Rank 0 gets an ``MlflowTracker``; every other rank a ``NullTracker`` with the same methods, so the
training loop never asks which rank it is on. A run always ends with a status that says how it
ended: FINISHED, KILLED (interrupted, or stopped by --stop-after) or FAILED, with the reason in the
``cnnbench.end`` tag. Every write goes through ``train.engine.outbox``: none is lost, applied twice or
applied over a later one when the store goes away and comes back.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit

from train.engine import outbox
from train.engine.gpus import run_nvml_indices
from train.engine.schema import PARAM_NAMES, WINDOW_METRICS, is_declared_epoch_metric, is_declared_run_metric
from train.errors import UsageError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
CREATED_AS_TAG = "cnnbench.created_as"  # a key given to the run at creation, to find it when the answer is lost
RETRY_S = 2.0
# what a resumed run changed, MLflow params being unchangeable: cnnbench.resumed.epoch-6 = "epochs: 10 -> 20; ..."
RESUME_TAG = "cnnbench.resumed.epoch-{epoch}"


def tracking_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def planned_epochs(params: dict, tags: dict) -> int | None:
    """The most epochs a run's schedule has had: its ``epochs`` param, or more where a resume raised it; None for a
    run without that param."""
    found = [params["epochs"]] if "epochs" in params else []
    prefix = RESUME_TAG.format(epoch="")
    found += [n for key, value in tags.items() if key.startswith(prefix)
              for n in re.findall(r"(?:^|; )epochs: \S+ -> (\d+)", value)]
    return max(map(int, found)) if found else None


def _undeclared(names, declared) -> list[str]:
    return sorted(set(names) - declared)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (three slashes: a relative path follows, four: an absolute one)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?")[0]) if uri.startswith(prefix) else None


def unknown_scheme(uri: str) -> str | None:
    """The scheme of ``uri`` when MLflow has no store for it (a typo such as ``htp://``), else None."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    scheme = urlsplit(uri).scheme.split("+")[0]
    return None if scheme in {"", "file", "http", "https", "databricks", *DATABASE_ENGINES} else scheme


STORES = "MLflow stores are http(s)://SERVER:PORT, sqlite:///FILE, postgresql://, mysql:// or mssql://"
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # each engine's default


def _as_given(uri: str) -> str:
    """Where the URI came from, for a message about it: the flag, or the environment variable."""
    return f"MLFLOW_TRACKING_URI={uri}" if os.environ.get("MLFLOW_TRACKING_URI") == uri else f"--tracking-uri {uri}"


def _file_stores_allowed() -> bool:
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    return bool(MLFLOW_ALLOW_FILE_STORE.get())


def _unanswered(uri: str, timeout_s: float) -> str | None:
    """Why the tracking server at ``uri`` cannot be used: no answer, or an answer that is not MLflow's."""
    import urllib.error
    import urllib.request

    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as err:  # an answer: a web server, but not an MLflow tracking server
        if err.code in (401, 403):  # one that asks for credentials: MLflow's client brings them ($MLFLOW_TRACKING_*)
            return None
        return (f"{uri} answers, but not as an MLflow tracking server ({health}: HTTP {err.code} {err.reason}); "
                f"is that the server's address and port?")
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        return f"MLflow tracking server {uri} cannot be reached: {getattr(err, 'reason', err)}"


def _database_unreachable(uri: str, timeout_s: float) -> str | None:
    """Why the database server of a database store cannot be reached (nothing listening, no such host), found by
    connecting to it; None for other stores and servers that take the connection."""
    parts = urlsplit(uri)
    engine = parts.scheme.split("+")[0]
    if engine not in DATABASE_PORTS or not parts.hostname:  # no host: a local socket, left to the driver
        return None
    address = (parts.hostname, parts.port or DATABASE_PORTS[engine])
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return None
    except OSError as err:
        return (f"MLflow tracking store {engine}://{address[0]}:{address[1]} cannot be reached: "
                f"{err.strerror or err} (is the database server running, and is that its address and port?)")


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside a sqlite file (``mlartifacts/``, as mlflow/server.sh puts them
    for the same file), or wherever a tracking server or file store puts them (None). Never ``./mlruns`` of the
    working directory, MLflow's default for database stores."""
    db = sqlite_file(uri)
    if db is not None:
        return (db.resolve().parent / "mlartifacts" / quote(experiment, safe="")).as_uri()
    from mlflow.store.db.db_types import DATABASE_ENGINES

    if urlsplit(uri).scheme.split("+")[0] in DATABASE_ENGINES:
        raise UsageError(f"experiment {experiment!r} does not exist in {uri}, and its artifacts would land in "
                         f"./mlruns of the working directory: create experiments through a tracking server over "
                         f"that database (mlflow/server.sh) and give its http:// address as --tracking-uri")
    return None


@dataclass
class RunEnd:
    """How the run will be closed when its scope exits without an exception."""

    status: str = "FINISHED"
    reason: str = "completed every epoch"
    pending: str | None = None  # set when the close leaves writes for `cnnbench sync`: how many, where

    def outcome(self) -> str:
        """The status the store holds, or, while writes are still pending, what is left to do."""
        return self.pending or self.status


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, run_id: str | None = None, grace_s: float = 120.0,
                 on_open: Callable[[str], None] | None = None):
        self.uri = uri
        self.experiment = experiment
        self.run_id = run_id
        self.grace_s = grace_s  # how long an absent server is waited for (run creation, the run's end)
        self.on_open = on_open  # told the run id as soon as the run exists (created or reopened)
        self.client = None
        self.outbox = None
        self.opened = False  # set once this process has created or reopened the run
        if uri.startswith(("http://", "https://")):
            # a write that fails goes to the outbox and is retried there; MLflow's own retries (minutes of
            # back-off per write) would stall training instead
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            # MLflow prints "View run ... at: URL" to stdout when a run on a server ends; cnnbench's own summary
            # says where to look, and stdout belongs to the program's output
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

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
        self._close(end)

    def _open(self, run_name: str, params: dict, config: dict, tags: dict) -> None:
        from mlflow import MlflowClient  # slow to import: only rank 0 pays for it

        quiet_mlflow()
        try:
            self.client = MlflowClient(self.uri)  # a sqlite store is created (or fails) right here
        except Exception as err:  # any error here means the store is unusable: say so once
            raise UsageError(f"cannot use MLflow tracking store {self.uri}: {outbox.describe(err)}") from None
        reopened = self.run_id is not None
        if reopened:
            self._check_reopenable()
        else:
            self.run_id = self._create_run(run_name, tags)
        self.opened = True
        self.outbox = outbox.Outbox(self.client, self.uri, self.run_id)
        if self.on_open:
            self.on_open(self.run_id)
        if reopened:
            self.outbox.send(outbox.status(outbox.RUNNING))
            self.set_tags(tags)
        else:
            self.log_params(params)
            self.outbox.send(outbox.dict_artifact("config.json", config))

    def _check_reopenable(self) -> None:
        """A resumed run that the store has deleted, or never held, takes no writes: say so before any work. A store
        that does not answer now is waited for like any other (the run's writes are queued)."""
        try:
            run = self.client.get_run(self.run_id)
        except Exception as err:
            if not outbox.is_store_error(err):
                raise
            if outbox.is_transient(err):
                return
            raise UsageError(f"run {self.run_id} of the checkpoint is not in MLflow tracking store {self.uri} "
                             f"({outbox.describe(err)}): give the --tracking-uri it was logged to") from None
        if run.info.lifecycle_stage == "deleted":
            raise UsageError(f"run {self.run_id} of the checkpoint is deleted in {self.uri}: restore it "
                             f"(`mlflow runs restore --run-id {self.run_id}` with MLFLOW_TRACKING_URI={self.uri}, or "
                             f"the MLflow UI) to resume it, or train a new run without --resume")

    def _create_run(self, run_name: str, tags: dict) -> str:
        """Create the run once, even when the store's answer is lost: a retry first looks for the run by a key
        given to it at creation. Transient errors are retried for up to the grace period."""
        key = uuid.uuid4().hex
        tags = {"mlflow.source.name": "cnnbench", CREATED_AS_TAG: key, **tags}
        deadline, experiment_id, retrying = time.monotonic() + self.grace_s, None, False
        while True:
            try:
                experiment_id = experiment_id or self._experiment_id()
                found = self.client.search_runs([experiment_id], f"tags.`{CREATED_AS_TAG}` = '{key}'") \
                    if retrying else []
                if found:
                    return found[0].info.run_id
                return self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
            except Exception as err:
                if not outbox.is_store_error(err):
                    raise
                if not outbox.is_transient(err) or time.monotonic() > deadline:
                    raise UsageError(f"cannot create a run in MLflow tracking store {self.uri}: "
                                     f"{outbox.describe(err)}") from None
                retrying = True
                time.sleep(RETRY_S)

    def probe(self, timeout_s: float = 5.0) -> str | None:
        """Why the store cannot be used, or None. Quick: MLflow's own client retries an absent server for minutes,
        and a database server for about two."""
        given = _as_given(self.uri)
        try:
            urlsplit(self.uri).port  # a bracket left open or a port that is no number: ValueError
        except ValueError as err:
            return f"{given}: not a URI ({err})"
        scheme = unknown_scheme(self.uri)
        if scheme:
            return f"{given}: unknown scheme {scheme!r} ({STORES})"
        if urlsplit(self.uri).scheme in ("", "file") and not _file_stores_allowed():
            what = "a folder" if urlsplit(self.uri).scheme else "no scheme, so a folder to MLflow"
            return (f"{given}: {what}, its file store, which MLflow keeps in maintenance mode and refuses unless "
                    f"MLFLOW_ALLOW_FILE_STORE=true; {STORES}")
        if self.uri.startswith(("http://", "https://")):
            return _unanswered(self.uri, timeout_s)
        db = sqlite_file(self.uri)
        if db is not None and not db.resolve().parent.is_dir():  # MLflow would create the whole path: a typo
            return (f"cannot use MLflow tracking store {self.uri}: folder {db.resolve().parent} does not exist "
                    f"(create it first if that is where the store belongs)")
        return _database_unreachable(self.uri, timeout_s)  # other stores are created, or refused, when the run opens

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            location = artifact_location(self.uri, self.experiment)
            try:
                return self.client.create_experiment(self.experiment, artifact_location=location)
            except Exception:
                found = self.client.get_experiment_by_name(self.experiment)  # another job created it meanwhile
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise UsageError(f"experiment {self.experiment!r} (id {found.experiment_id}) is deleted in {self.uri}: "
                             f"restore it (MLflow UI, or `mlflow experiments restore --experiment-id "
                             f"{found.experiment_id}`) or give another --experiment")
        return found.experiment_id

    def log_params(self, params: dict) -> None:
        bad = _undeclared(params, PARAM_NAMES)
        if bad:
            raise ValueError(f"params not declared in train.engine.schema: {bad}")
        self.outbox.send(outbox.batch(params={k: str(v) for k, v in params.items()}))

    def log_metrics(self, metrics: dict, step: int, series: dict[str, list] | None = None) -> None:
        """``metrics`` at ``step``, and with them ``series``: step-"window" metrics as lists of (step, value)."""
        for write in self._metric_writes(metrics, step, series):
            self.outbox.send(write)

    def _metric_writes(self, metrics: dict, step: int, series: dict[str, list] | None) -> list[dict]:
        declared = is_declared_epoch_metric if step > 0 else is_declared_run_metric
        bad = sorted(name for name in metrics if not declared(name))
        bad += _undeclared(series or {}, WINDOW_METRICS)
        if bad:
            raise ValueError(f"metrics not declared in train.engine.schema for this step: {bad}")
        now = outbox.now_ms()
        points = [(k, float(v), now, step) for k, v in metrics.items()]
        points += [(k, float(v), now, s) for k, values in (series or {}).items() for s, v in values]
        return [outbox.batch(metrics=points[start:start + MAX_METRICS_PER_BATCH])
                for start in range(0, len(points), MAX_METRICS_PER_BATCH)]

    def set_tags(self, tags: dict[str, str]) -> None:
        if tags:
            self.outbox.send(outbox.batch(tags=tags))

    def log_dataset(self, spec) -> None:
        """The training data as the run's MLflow dataset input: name, digest, and where it comes from."""
        source_type = "local" if Path(spec.source).is_absolute() else "code"
        self.outbox.send(outbox.dataset_input(spec.name, spec.digest, source_type, spec.source, "training"))

    def ensure_logged(self, metrics: dict, step: int, series: dict[str, list] | None = None) -> None:
        """Log an epoch's metrics unless the store has them already (a resumed job's last checkpointed epoch):
        sent as replays, which are checked against the store's record when they are delivered."""
        for write in self._metric_writes(metrics, step, series) if metrics else []:
            self.outbox.send({**write, "replay": True})

    def keep_undelivered_in(self, folder: Path) -> None:
        """Where writes the store does not take are kept for ``cnnbench sync`` (the run's checkpoint folder).
        Writes an earlier segment of the run left there are delivered first."""
        self.outbox.adopt(folder / outbox.OUTBOX_NAME)

    def _close(self, end: RunEnd, grace_s: float | None = None) -> None:
        self.outbox.send(outbox.status(end.status, end.reason))
        if not self.outbox.drain(self.grace_s if grace_s is None else grace_s):
            left, path = len(self.outbox.pending), self.outbox.path
            end.pending = (f"{left} writes pending in {path}; run `cnnbench sync {path}`" if path
                           else f"{left} writes not delivered")

    def _close_if_open(self, status: str, reason: str) -> None:
        if not self.opened:
            return
        try:  # no waiting for an absent server here: a killed job has seconds left, not minutes
            self._close(RunEnd(status, reason), grace_s=0)
        except UsageError:
            pass  # the store refuses the run's writes: they are kept, and the refusal already on its way is the news


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

    def log_metrics(self, metrics: dict, step: int, series: dict[str, list] | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_dataset(self, spec) -> None:
        pass

    def ensure_logged(self, metrics: dict, step: int, series: dict[str, list] | None = None) -> None:
        pass

    def keep_undelivered_in(self, folder: Path) -> None:
        pass


def make_tracker(is_main: bool, uri: str, experiment: str, run_id: str | None, grace_s: float = 120.0,
                 on_open: Callable[[str], None] | None = None):
    """Rank 0's tracker, or one that does nothing; ``on_open`` is told the run id as soon as the run exists."""
    return MlflowTracker(uri, experiment, run_id, grace_s, on_open) if is_main else NullTracker()


def system_metrics_on(setting: bool | None, world_size: int) -> bool:
    """--system-metrics / --no-system-metrics; by default on for multi-process jobs."""
    return world_size > 1 if setting is None else setting


RUN_ID_CHARS = 64  # MLflow's run ids are 32 hex digits; room to spare


@contextlib.contextmanager
def record_system_metrics(dist, run_id: str | None, uri: str, on: bool, resumed: bool):
    """MLflow's own system-metrics monitor (CPU, memory, disk, network; with nvidia-ml-py GPU utilisation, memory
    and power) in one process per node, local rank 0, as ``system/<host name>/...``, every
    $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's default 10). Stopped before the run is closed.
    GPU metrics are the node's ranks' GPUs only, as ``gpu_<i>_...`` with i the GPU's NVML (nvidia-smi) index."""
    if on and dist.ctx.world_size > 1:
        run_id = _shared_run_id(dist, run_id)
    node_gpus = _node_cuda_indices(dist) if on else []
    if not (on and dist.ctx.local_rank == 0):
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, node_id=socket.gethostname(), tracking_uri=uri, resume_logging=resumed)
    _watch_only(monitor, run_nvml_indices(node_gpus))
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _node_cuda_indices(dist) -> list[int]:
    """The CUDA indices of the GPUs of this node's ranks (a collective: every rank takes part)."""
    from train.engine.distributed import gather_per_rank

    host, device = zlib.crc32(socket.gethostname().encode()), dist.ctx.device
    rows = gather_per_rank(dist, [host, (device.index or 0) if device.type == "cuda" else -1])
    return sorted({int(index) for node, index in rows if node == host and index >= 0})


def _watch_only(monitor, nvml_indices: list[int]) -> None:
    """MLflow's GPU monitor watches every GPU of the node, numbered 0..n-1 in NVML's order: have it watch the run's
    GPUs alone, under their NVML numbers (none on a node without NVML or without the run's GPUs)."""
    from mlflow.system_metrics.metrics import gpu_monitor

    class RunGpus(gpu_monitor.GPUMonitor):
        def __init__(self):
            super().__init__()
            self.gpu_handles = [gpu_monitor.pynvml.nvmlDeviceGetHandleByIndex(i) for i in nvml_indices]

        def aggregate_metrics(self):
            return _gpu_metrics_renumbered(super().aggregate_metrics(), nvml_indices)

    monitor.monitors = [m for m in monitor.monitors if not isinstance(m, gpu_monitor.GPUMonitor)]
    if nvml_indices:
        monitor.monitors.append(RunGpus())


def _gpu_metrics_renumbered(metrics: dict, nvml_indices: list[int]) -> dict:
    """``gpu_<k>_<what>`` of the k-th watched GPU as ``gpu_<its NVML index>_<what>``."""
    renamed = {}
    for name, value in metrics.items():
        prefix, k, what = name.split("_", 2)
        renamed[f"{prefix}_{nvml_indices[int(k)]}_{what}"] = value
    return renamed


def _shared_run_id(dist, run_id: str | None) -> str:
    """Rank 0's run id on every rank: its characters' codes summed with every other rank's zeros."""
    import torch

    codes = torch.zeros(RUN_ID_CHARS, dtype=torch.float64, device=dist.ctx.device)
    if run_id is not None:
        codes[:len(run_id)] = torch.tensor([ord(c) for c in run_id], dtype=torch.float64)
    return "".join(chr(int(c)) for c in dist.all_reduce_sum(codes).tolist() if c)


def quiet_mlflow() -> None:
    """MLflow's INFO lines (a new sqlite store, its migrations, the system-metrics thread) clutter a run's stderr:
    WARNING and up only, unless $MLFLOW_LOGGING_LEVEL asks for more."""
    levels = {"alembic": logging.WARNING}
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        levels["mlflow"] = logging.WARNING
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def open_store(uri: str):
    """An ``MlflowClient`` for reading the runs of ``uri``; a store that cannot be used is a UsageError."""
    from mlflow import MlflowClient

    problem = MlflowTracker(uri, experiment="").probe()  # fails fast where MLflow would retry for minutes
    if problem:
        raise UsageError(problem)
    quiet_mlflow()
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
