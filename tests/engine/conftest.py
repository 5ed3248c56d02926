"""``outage``: the tracker's MLflow store goes away and comes back, in-process, as an absent server looks to MLflow."""
from __future__ import annotations

from typing import Callable

import pytest


class Outage:
    """While ``on``, every call of the tracker's ``MlflowClient`` fails as one to a stopped server does: MLflow
    reports a refused connection as an ``MlflowException`` (HTTP status 500). ``starts_when(method, kwargs)``
    turns it on at the first call it accepts, before that call."""

    def __init__(self):
        self.on = False
        self.starts_when: Callable[[str, dict], bool] | None = None
        self.failed = 0  # calls that failed

    def check(self, method: str, kwargs: dict) -> None:
        from mlflow.exceptions import MlflowException

        if self.starts_when is not None and self.starts_when(method, kwargs):
            self.on, self.starts_when = True, None
        if self.on:
            self.failed += 1
            raise MlflowException(f"API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/{method} failed with "
                                  f"exception ConnectionError: [Errno 111] Connection refused")


@pytest.fixture
def outage(monkeypatch) -> Outage:
    import mlflow

    state, real = Outage(), mlflow.MlflowClient

    class FlakyClient(real):
        def __getattribute__(self, name):
            attr = super().__getattribute__(name)
            if name.startswith("_") or not callable(attr):
                return attr

            def call(*args, **kwargs):
                state.check(name, kwargs)
                return attr(*args, **kwargs)
            return call

    monkeypatch.setattr(mlflow, "MlflowClient", FlakyClient)  # what the tracker imports; tests keep the real one
    return state
