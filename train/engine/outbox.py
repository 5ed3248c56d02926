"""MLflow writes that are never lost, never applied twice and never move a run backwards.

Every write of a run (metrics, params, tags, its config, its status) goes through an ``Outbox``: sent at once
when the store answers, queued in order when it does not, and retried before each later write. While anything
is queued it is also kept in a JSON-lines file next to the run's checkpoints; a later segment of the run
(``--resume``, a torchrun restart) delivers that file first, and ``cnnbench sync FILE`` replays it by hand.

What identifies a write, so that a replay is idempotent:
- an epoch's metric is its (key, epoch): logged once per run;
- a run-level figure (step 0) is its (key, timestamp): a replay never logs it over a later one;
- a param or tag is its key: a replay never sets it again;
- a status (RUNNING when a segment starts, FINISHED/KILLED/FAILED when it ends) carries its time, kept in the
  run's ``cnnbench.status_time_ms`` tag: an older one never overwrites a later one.
Writes whose delivery is uncertain (read from a file, re-sent after a failed attempt, re-logged from a
checkpoint) are marked ``replay`` and checked against the store before they are sent.

The store's errors are told apart: an outage (no answer, or an answer that it is busy or broken for now: HTTP
5xx, 429) is waited out; a refusal for good (4xx: a deleted or unknown run, a bad value) stops at once, in one
line, with the writes kept in the file (a data-set write answered 400 is asked again first: ``_log_dataset``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import textwrap
import time
from pathlib import Path, PurePosixPath

from train.engine.schema import EPOCH_METRICS, WINDOW_METRICS, is_declared_run_metric
from train.errors import UsageError

log = logging.getLogger("cnnbench")
END_TAG = "cnnbench.end"
STATUS_TIME_TAG = "cnnbench.status_time_ms"
OUTBOX_NAME = "mlflow-outbox.jsonl"
RUNNING = "RUNNING"
STATUSES = (RUNNING, "FINISHED", "KILLED", "FAILED")  # MLflow's run statuses that a run of cnnbench sets
# A time further ahead of this machine's clock than this was not written by a run: kept, a status with it would make
# every later status look older, and the run could never be closed again
CLOCK_SKEW_MS = 10 * 60 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def batch(metrics=(), params=None, tags=None) -> dict:
    """A log_batch write; ``metrics`` as (key, value, timestamp ms, step) tuples."""
    return {"kind": "batch", "metrics": [list(m) for m in metrics], "params": params or {}, "tags": tags or {}}


def status(status: str, reason: str = "") -> dict:
    """RUNNING when a segment of the run starts; its end status and why when it ends."""
    return {"kind": "status", "status": status, "reason": reason, "time": now_ms()}


def dict_artifact(name: str, content: dict) -> dict:
    """A JSON artifact of the run, e.g. its resolved config."""
    return {"kind": "dict", "name": name, "content": content}


def dataset_input(name: str, digest: str, source_type: str, source: str, context: str) -> dict:
    """The data set a run reads, as MLflow's dataset input (the UI's Dataset column); MLflow links a data set of
    the same name and digest to a run once, so a replay adds nothing."""
    return {"kind": "dataset", "name": name, "digest": digest, "source_type": source_type, "source": source,
            "context": context}


def is_store_error(err: BaseException) -> bool:
    """Raised by the store or on the way to it (anything else is a bug and keeps its traceback)."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, (MlflowException, OSError))


def is_transient(err: BaseException) -> bool:
    """Whether trying again can succeed: no answer (MLflow reports a failed connection as HTTP 500), or an
    answer that the store is busy or broken for now (5xx, 429). A 4xx answer is a refusal for good."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        code = err.get_http_status_code()
        return code >= 500 or code == 429
    return isinstance(err, OSError)


def describe(err: BaseException) -> str:
    first = textwrap.shorten(str(err).strip().splitlines()[0], 300, placeholder=" ...") if str(err).strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def deliver(client, run_id: str, write: dict) -> tuple[bool, list[str]]:
    """Send one write. Whether the store took any of it (a replay leaves out what the store holds already), and
    what of it the store holds with another value, which a replay never overwrites, in words."""
    from mlflow.entities import Metric, Param, RunTag

    if write["kind"] == "status":
        return _set_status(client, run_id, write), []
    if write["kind"] == "dict":
        if write.get("replay") and write["name"] in {a.path for a in client.list_artifacts(run_id)}:
            return False, []
        client.log_dict(run_id, write["content"], write["name"])
        return True, []
    if write["kind"] == "dataset":
        _log_dataset(client, run_id, write)
        return True, []
    conflicts = []
    if write.get("replay"):
        write, conflicts = _not_yet_logged(client, run_id, write)
    if not (write["metrics"] or write["params"] or write["tags"]):
        return False, conflicts
    client.log_batch(run_id, metrics=[Metric(*m) for m in write["metrics"]],
                     params=[Param(k, v) for k, v in write["params"].items()],
                     tags=[RunTag(k, v) for k, v in write["tags"].items()])
    return True, conflicts


DATASET_ATTEMPTS = 3


def _log_dataset(client, run_id: str, write: dict) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    dataset = Dataset(write["name"], write["digest"], write["source_type"], json.dumps({"uri": write["source"]}))
    inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", write["context"])])]
    for attempt in range(1, DATASET_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, inputs)
            return
        except MlflowException as err:
            # MLflow's store looks the data set up, then inserts it: runs that log a new data set of one experiment
            # at the same moment all insert it, and all but the first are answered 400 (a primary-key clash), no
            # refusal at all. Asked again, the store finds the first one's row.
            if err.get_http_status_code() != 400 or attempt == DATASET_ATTEMPTS:
                raise
            time.sleep(0.1 * attempt)


def _set_status(client, run_id: str, write: dict) -> bool:
    from mlflow.entities import RunTag

    stored = client.get_run(run_id).data.tags.get(STATUS_TIME_TAG)
    if stored is not None and int(stored) > write["time"]:
        return False  # a later segment of the run has set its status since
    tags = {STATUS_TIME_TAG: str(write["time"])}
    if write["status"] != RUNNING:
        tags[END_TAG] = write["reason"]
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if write["status"] == RUNNING:
        client.update_run(run_id, status=RUNNING)
    else:
        client.set_terminated(run_id, write["status"], end_time=write["time"])
    return True


def _not_yet_logged(client, run_id: str, write: dict) -> tuple[dict, list[str]]:
    """The part of a replayed batch that the store does not hold yet, and the params and tags it holds with other
    values (never set again: MLflow params cannot change, and a tag the store holds is the later one)."""
    data = client.get_run(run_id).data
    latest = {}  # (key, step) -> the latest timestamp the store holds there
    for key in {m[0] for m in write["metrics"]}:
        for m in client.get_metric_history(run_id, key):
            latest[key, m.step] = max(m.timestamp, latest.get((key, m.step), m.timestamp))
    # an epoch's (or a window's) value is logged once per run; a run-level figure (step 0) not over a later one
    metrics = [[key, value, timestamp, step] for key, value, timestamp, step in write["metrics"]
               if (key, step) not in latest or (step == 0 and latest[key, step] < timestamp)]
    conflicts = [f"{kind} {k}={v!r} (the run holds {held[k]!r})" for kind, given, held in
                 (("param", write["params"], data.params), ("tag", write["tags"], data.tags))
                 for k, v in given.items() if k in held and held[k] != v]
    return batch(metrics, {k: v for k, v in write["params"].items() if k not in data.params},
                 {k: v for k, v in write["tags"].items() if k not in data.tags}), conflicts


class Outbox:
    def __init__(self, client, uri: str, run_id: str):
        self.client, self.uri, self.run_id = client, uri, run_id
        self.pending: list[dict] = []
        self.path: Path | None = None  # where undelivered writes are kept; None: only in memory
        self.outage_since: float | None = None
        self.last_problem: str | None = None  # why the last delivery failed
        self.delivered = 0
        self.delivered_late = 0  # after an outage: each was retried
        self.applied = 0  # delivered writes the store took (a replay of what it holds is delivered, not applied)
        self.not_applied: list[str] = []  # what replays held that the store holds with other values, in words

    def send(self, write: dict) -> None:
        self.pending.append(write)
        self.flush()

    def adopt(self, path: Path) -> bool:
        """Keep undelivered writes in ``path`` from now on, delivering first what an earlier process of the run
        left there (a segment that stopped while the store was away). True when nothing is left queued."""
        if path.exists():
            header, left = read_outbox(path)
            if header["run_id"] != self.run_id:
                raise UsageError(f"{path} holds writes of run {header['run_id']}, not of run {self.run_id}")
            for write in left:
                write["replay"] = True  # some may have been delivered before that process stopped
            self.pending[:0] = left
        self.path = path
        return self.flush()

    def flush(self) -> bool:
        """Deliver the queue in order; True when it is empty. Keeps the file in step with the queue."""
        while self.pending:
            try:
                applied, conflicts = deliver(self.client, self.run_id, self.pending[0])
            except Exception as err:
                if not is_store_error(err):
                    raise
                self._keep()
                if not is_transient(err):
                    raise self._refusal(err) from None
                self.pending[0]["replay"] = True  # the store may have taken it before the answer was lost
                self._note_outage(err)
                return False
            self.pending.pop(0)
            self.delivered += 1
            self.applied += applied
            self.not_applied += conflicts
            self.delivered_late += self.outage_since is not None
        if self.outage_since is not None:
            log.warning("MLflow store %s answers again: queued writes delivered after %.0f s", self.uri,
                        time.monotonic() - self.outage_since)
            self.outage_since = None
        self._keep()
        return True

    def drain(self, grace_s: float) -> bool:
        """At the end of the run: keep retrying for up to ``grace_s`` seconds."""
        deadline = time.monotonic() + grace_s
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if self.pending:
            where = f"kept in {self.path}" if self.path else "lost (no checkpoint folder to keep them in)"
            log.warning("MLflow store %s did not come back: %d writes %s; replay them with: cnnbench sync %s",
                        self.uri, len(self.pending), where, self.path or "")
        else:
            log.info("MLflow: all %d writes of run %s delivered to %s (%d after a retry)", self.delivered,
                     self.run_id, self.uri, self.delivered_late)
        return not self.pending

    def _refusal(self, err: Exception) -> UsageError:
        kept = f"kept in {self.path}: replay them with `cnnbench sync {self.path}` once it takes them" if self.path \
            else "not kept (no checkpoint folder)"
        return UsageError(f"MLflow store {self.uri} refuses the writes of run {self.run_id} ({describe(err)}); "
                          f"{len(self.pending)} writes {kept}")

    def _note_outage(self, err: Exception) -> None:
        self.last_problem = describe(err)
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning("MLflow store %s does not answer (%s); training goes on, writes are queued%s", self.uri,
                        self.last_problem, f" and kept in {self.path}" if self.path else "")

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


# what each kind of write holds, for reading a file back
_FIELDS = {"batch": {"metrics": list, "params": dict, "tags": dict},
           "status": {"status": str, "reason": str, "time": int},
           "dict": {"name": str, "content": dict},
           "dataset": {"name": str, "digest": str, "source_type": str, "source": str, "context": str}}
_SET_WITH_A_STATUS = (END_TAG, STATUS_TIME_TAG)


def read_outbox(path: Path, epochs: int | None = None) -> tuple[dict, list[dict]]:
    """The header ({uri, run_id}) and the writes of an outbox file, checked whole before any is delivered: what no
    run of cnnbench writes (an unknown status, a step outside the schedule of ``epochs`` when it is known, a value
    that is not a number, a time in the future) is a one-line UsageError naming the file's line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as err:  # ValueError: not UTF-8
        raise UsageError(f"{path}: not a readable cnnbench outbox ({describe(err)})") from None
    numbered = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            numbered.append((number, json.loads(line)))
        except ValueError as err:
            where = (f"{err.msg.removesuffix(' at')} at column {err.colno}" if isinstance(err, json.JSONDecodeError)
                     else describe(err))
            raise UsageError(f"{path}: not a readable cnnbench outbox (line {number} is not JSON: {where}; "
                             f"a file cut short by a full disk or a copy?)") from None
    problem = _malformed(numbered, epochs)
    if problem:
        raise UsageError(f"{path}: not a cnnbench outbox of this run, nothing written ({problem})")
    return numbered[0][1], [write for _, write in numbered[1:]]


def _malformed(numbered: list[tuple[int, object]], epochs: int | None) -> str | None:
    if not numbered:
        return "empty"
    header = numbered[0][1]
    if not (isinstance(header, dict) and isinstance(header.get("uri"), str) and isinstance(header.get("run_id"), str)):
        return "line 1 is not a header with the store's uri and the run_id"
    latest = now_ms() + CLOCK_SKEW_MS
    for number, write in numbered[1:]:
        fields = _FIELDS.get(write.get("kind")) if isinstance(write, dict) else None
        if fields is None or not all(isinstance(write.get(k), t) for k, t in fields.items()):
            return f"line {number} is not a write of a known kind with its fields"
        problem = _bad_write(write, epochs, latest)
        if problem:
            return f"line {number} {problem}"
    return None


def _bad_write(write: dict, epochs: int | None, latest: int) -> str | None:
    """What in a well-formed write no run of cnnbench writes."""
    if write["kind"] == "status":
        if write["status"] not in STATUSES:
            return f"has status {write['status']!r}; a run's status is one of {', '.join(STATUSES)}"
        return _bad_time(write["time"], latest)
    if write["kind"] == "dict":
        name = PurePosixPath(write["name"])
        if not write["name"] or name.is_absolute() or ".." in name.parts:
            return f"names artifact {write['name']!r}, which would land outside the run's artifact folder"
        return None
    if write["kind"] != "batch":
        return None
    if not all(isinstance(v, str) for v in (*write["params"].values(), *write["tags"].values())):
        return "has a param or tag whose value is not text"
    reserved = sorted(set(write["tags"]) & set(_SET_WITH_A_STATUS))
    if reserved:
        return f"sets tag {reserved[0]}, which only a status write sets"
    for metric in write["metrics"]:
        problem = _bad_metric(metric, epochs, latest)
        if problem:
            return problem
    return None


def _bad_metric(m, epochs: int | None, latest: int) -> str | None:
    if not (isinstance(m, list) and len(m) == 4 and isinstance(m[0], str) and _is_number(m[1])
            and isinstance(m[2], int) and isinstance(m[3], int)):
        return "has a metric that is not [key, value, timestamp, step]"
    key, value, timestamp, step = m
    # NaN is how a run records a figure that is undefined (the spread of a single timing window); infinity never
    if math.isinf(value):
        return f"gives {key} the value {value}, not a finite number"
    if key in EPOCH_METRICS:
        top = f"..{epochs}" if epochs is not None else " or more"
        if step < 1 or (epochs is not None and step > epochs):
            return f"logs {key} at step {step}: an epoch metric's step is its epoch, 1{top}"
    elif key in WINDOW_METRICS:
        if step < 1:
            return f"logs {key} at step {step}: a timing window's step counts from 1"
    elif is_declared_run_metric(key):
        if step != 0:
            return f"logs {key} at step {step}: a run-level figure is logged at step 0"
    else:
        return f"logs {key!r}, a metric train.engine.schema does not declare"
    return _bad_time(timestamp, latest)


def _bad_time(ms: int, latest: int) -> str | None:
    if 0 <= ms <= latest:
        return None
    return (f"is timed {ms} ms, before 1970 or more than {CLOCK_SKEW_MS // 60000} minutes ahead of this machine's "
            f"clock ({now_ms()} ms)")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
