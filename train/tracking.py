"""MLflow logging through ``MlflowClient``, restricted to the names of ``train.schema``.

Rank 0 gets an ``MlflowTracker``; every other rank a ``NullTracker`` with the same methods, so the
training loop never asks which rank it is on. A run always ends with a status that says how it
ended: FINISHED, KILLED (interrupted, or stopped by --stop-after) or FAILED, with the reason in the
``cnnbench.end`` tag.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from train.errors import UsageError
from train.schema import EPOCH_METRICS, PARAM_NAMES, RUN_METRICS

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
END_TAG = "cnnbench.end"


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
    def __init__(self, uri: str, experiment: str, run_id: str | None = None):
        self.uri = uri
        self.experiment = experiment
        self.run_id = run_id
        self.client = None

    def open(self, run_name: str, params: dict, config: dict) -> str:
        """Create the run (or reopen the resumed one) and record what it is; returns the run id."""
        from mlflow import MlflowClient  # slow to import: only rank 0 pays for it

        logging.getLogger("alembic").setLevel(logging.WARNING)
        try:
            self.client = MlflowClient(self.uri)  # a sqlite store is created (or fails) right here
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                return self.run_id
            experiment_id = self._experiment_id()
        except Exception as err:  # any store error here means the store is unusable: say so once
            raise UsageError(f"cannot use MLflow tracking store {self.uri}: {type(err).__name__}: {err}") from None
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"mlflow.source.name": "cnnbench"})
        self.run_id = run.info.run_id
        self.log_params(params)
        self.client.log_dict(self.run_id, config, "config.json")
        return self.run_id

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found else self.client.create_experiment(self.experiment)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        bad = _undeclared(params, PARAM_NAMES)
        if bad:
            raise ValueError(f"params not declared in train.schema: {bad}")
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        declared = EPOCH_METRICS if step > 0 else RUN_METRICS
        bad = _undeclared(metrics, declared)
        if bad:
            raise ValueError(f"metrics not declared in train.schema for this step: {bad}")
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def close(self, status: str, reason: str) -> None:
        self.client.set_tag(self.run_id, END_TAG, reason)
        self.client.set_terminated(self.run_id, status)

    @contextlib.contextmanager
    def scope(self):
        """Yields a ``RunEnd`` the caller may change; an exception closes the run KILLED or FAILED."""
        end = RunEnd()
        try:
            yield end
        except KeyboardInterrupt:
            self.close("KILLED", "interrupted (SIGINT/SIGTERM)")
            raise
        except BaseException as err:
            self.close("FAILED", f"{type(err).__name__}: {err}"[:5000])
            raise
        self.close(end.status, end.reason)


class NullTracker:
    """What ranks other than 0 get: the tracker's interface, doing nothing."""

    run_id = None

    def open(self, run_name: str, params: dict, config: dict) -> None:
        return None

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    @contextlib.contextmanager
    def scope(self):
        yield RunEnd()


def make_tracker(is_main: bool, uri: str, experiment: str, run_id: str | None):
    return MlflowTracker(uri, experiment, run_id) if is_main else NullTracker()
