"""MLflow writes that must not be lost when the tracking server goes away in the middle of a run.

Every write of a run (metrics, params, tags, its end) goes through an ``Outbox``: sent at once when the
store answers, queued in order when it does not, and retried before each later write. While anything is
queued it is also kept in a JSON-lines file next to the run's checkpoints, so that a server that never
comes back costs nothing: ``cnnbench sync FILE`` replays the file into the store later.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from train.errors import UsageError

log = logging.getLogger("cnnbench")
END_TAG = "cnnbench.end"
OUTBOX_NAME = "mlflow-outbox.jsonl"


def batch(metrics=(), params=None, tags=None) -> dict:
    """A log_batch write; ``metrics`` as (key, value, timestamp ms, step) tuples."""
    return {"kind": "batch", "metrics": [list(m) for m in metrics], "params": params or {}, "tags": tags or {}}


def end(status: str, reason: str) -> dict:
    return {"kind": "end", "status": status, "reason": reason}


def deliver(client, run_id: str, write: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag

    if write["kind"] == "batch":
        client.log_batch(run_id, metrics=[Metric(*m) for m in write["metrics"]],
                         params=[Param(k, v) for k, v in write["params"].items()],
                         tags=[RunTag(k, v) for k, v in write["tags"].items()])
    else:
        client.set_tag(run_id, END_TAG, write["reason"])
        client.set_terminated(run_id, write["status"])


class Outbox:
    def __init__(self, client, uri: str, run_id: str):
        self.client, self.uri, self.run_id = client, uri, run_id
        self.pending: list[dict] = []
        self.path: Path | None = None  # where undelivered writes are kept; None: only in memory
        self.outage_since: float | None = None

    def send(self, write: dict) -> None:
        self.pending.append(write)
        self.flush()

    def flush(self) -> bool:
        """Deliver the queue in order; True when it is empty. Keeps the file in step with the queue."""
        while self.pending:
            try:
                deliver(self.client, self.run_id, self.pending[0])
            except Exception as err:  # the store's errors come in many types; all mean "not delivered"
                self._note_outage(err)
                break
            self.pending.pop(0)
        if not self.pending and self.outage_since is not None:
            log.warning("MLflow store %s answers again: queued writes delivered after %.0f s", self.uri,
                        time.monotonic() - self.outage_since)
            self.outage_since = None
        self._keep()
        return not self.pending

    def drain(self, grace_s: float) -> bool:
        """At the end of the run: keep retrying for up to ``grace_s`` seconds."""
        deadline = time.monotonic() + grace_s
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if self.pending:
            where = f"kept in {self.path}" if self.path else "lost (no checkpoint folder to keep them in)"
            log.warning("MLflow store %s did not come back: %d writes %s; replay them with: cnnbench sync %s",
                        self.uri, len(self.pending), where, self.path or "")
        return not self.pending

    def _note_outage(self, err: Exception) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            log.warning("MLflow store %s does not answer (%s); training goes on, writes are queued%s", self.uri,
                        first, f" and kept in {self.path}" if self.path else "")

    def _keep(self) -> None:
        if self.path is None:
            return
        if not self.pending:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        header = {"uri": self.uri, "run_id": self.run_id}
        tmp.write_text("".join(json.dumps(line) + "\n" for line in [header, *self.pending]))
        os.replace(tmp, self.path)


def read_outbox(path: Path) -> tuple[dict, list[dict]]:
    try:
        header, *writes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return header, writes
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(f"{path}: not a readable cnnbench outbox ({type(err).__name__}: {err})") from None
