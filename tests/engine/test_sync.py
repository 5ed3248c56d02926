"""``cnnbench sync FILE``: replays what a run kept, idempotently; bad files and refusals end in one line."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mlflow import MlflowClient
from tests.engine.test_bad_input import launch_here
from tests.engine.test_tracking import resume, stopped_while_away
from train import cli
from train.engine import sync
from train.engine.outbox import OUTBOX_NAME, Outbox, now_ms, read_outbox
from train.engine.tracking import MlflowTracker
from train.errors import UsageError


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def record(uri: str, run_id: str) -> dict:
    """Everything the store holds of a run: status, params, tags, every metric's whole history."""
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    histories = {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
                 for key in run.data.metrics}
    return {"status": run.info.status, "end_time": run.info.end_time, "params": run.data.params,
            "tags": run.data.tags, "metrics": histories}


def test_sync_delivers_the_file_and_says_how_many_writes(store, tmp_path, outage, capsys):
    run_id = stopped_while_away(store, tmp_path / "ckpt", outage)
    outbox = tmp_path / "ckpt" / OUTBOX_NAME
    assert sync.main([str(outbox)]) == 0
    # epochs 2 and 3, the run-level figure, the end
    assert capsys.readouterr().out.strip() == f"{outbox}: 4 writes replayed into run {run_id} in {store}"
    assert not outbox.exists()
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "KILLED" and [m.step for m in MlflowClient(store).get_metric_history(
        run_id, "val_top1_err")] == [1, 2, 3]


def test_replaying_a_stale_copy_after_the_run_resumed_changes_nothing(store, tmp_path, outage):
    run_id = stopped_while_away(store, tmp_path / "ckpt", outage)
    stale = tmp_path / "copy.jsonl"
    shutil.copy(tmp_path / "ckpt" / OUTBOX_NAME, stale)
    resume(store, tmp_path / "ckpt", run_id)
    before = record(store, run_id)
    assert sync.main([str(stale)]) == 0
    assert record(store, run_id) == before
    assert before["status"] == "FINISHED"


def test_sync_into_a_store_without_the_run_stops_at_once_naming_the_refusal(store, tmp_path, outage):
    stopped_while_away(store, tmp_path / "ckpt", outage)
    outbox = tmp_path / "ckpt" / OUTBOX_NAME
    with pytest.raises(UsageError, match=r"refuses the writes of run \w+ \(.*not found\); 4 writes kept in") as info:
        sync.main([str(outbox), "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}"])
    assert "try again later" not in str(info.value)
    assert outbox.exists()


MALFORMED = {
    "empty": b"",
    "not utf-8": b"\xff\xfe\x00garbage",
    "not json": b"{uri: nope}\n",
    "header is a list": b'["sqlite:///x.db", "abc"]\n',
    "header without run id": b'{"uri": "sqlite:///x.db"}\n',
    "unknown kind": b'{"uri": "STORE", "run_id": "abc"}\n{"kind": "launch", "missiles": 1}\n',
    "metric not a 4-list": b'{"uri": "STORE", "run_id": "abc"}\n{"kind": "batch", "metrics": [["loss", 1.0]], '
                           b'"params": {}, "tags": {}}\n',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_outbox_is_one_line_and_exit_code_2(case, store, tmp_path, capsys):
    path = tmp_path / OUTBOX_NAME
    path.write_bytes(MALFORMED[case].replace(b"STORE", store.encode()))
    with pytest.raises(SystemExit) as code:
        cli.main(["sync", str(path)])
    err = capsys.readouterr().err
    assert code.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"cnnbench: error: {path}: " + err.split(f"{path}: ", 1)[1].strip()]
    assert "outbox" in err and path.exists()



# ---- an outbox is checked whole before anything is written: a bad sync leaves the record as it was (issue 23) ----

FUTURE_MS = 9796458000000  # the year 2280


@pytest.fixture(scope="module")
def killed_store(tmp_path_factory) -> tuple[Path, str]:
    """A store holding a run of 4 planned epochs stopped after epoch 3 (as by --stop-after), whose record is
    complete; made once, copied by each test (a new sqlite store takes seconds)."""
    db = tmp_path_factory.mktemp("killed") / "mlflow.db"
    tracker = MlflowTracker(f"sqlite:///{db}", "sync", grace_s=0)
    with tracker.run("r", {"epochs": 4}, {"epochs": 4}) as end:
        for n in (1, 2, 3):
            tracker.log_metrics({"val_top1_err": 50.0 - n}, step=n)
        end.status, end.reason = "KILLED", "stopped after epoch 3 of 4 (--stop-after)"
    return db, tracker.run_id


@pytest.fixture
def killed_run(killed_store, store) -> str:
    shutil.copy(killed_store[0], store[len("sqlite:///"):])
    return killed_store[1]


def outbox_file(path, uri: str, run_id: str, *lines: str):
    """A file a run might have left: its header, then ``lines`` as they are."""
    header = json.dumps({"uri": uri, "run_id": run_id})
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def metric(key: str, value: str, step: int, time_ms: int | None = None) -> str:
    return (f'{{"kind": "batch", "metrics": [["{key}", {value}, {time_ms or now_ms()}, {step}]], "params": {{}}, '
            f'"tags": {{}}}}')


# every file starts with a write that is fine on its own (epoch 4's error and a new tag): written first, it would
# change the record even though the file is refused
GOOD_FIRST = ('{"kind": "batch", "metrics": [["val_top1_err", 40.0, NOW, 4]], "params": {}, '
              '"tags": {"note": "written before the bad line"}}')
BAD_LINES = {
    "unknown status from the future": ('{"kind": "status", "status": "BOGUS", "reason": "x", "time": %d}' % FUTURE_MS,
                                       r"line 3 has status 'BOGUS'; a run's status is one of RUNNING, FINISHED"),
    "known status from the future": ('{"kind": "status", "status": "FINISHED", "reason": "x", "time": %d}' % FUTURE_MS,
                                     r"line 3 is timed 9796458000000 ms, .* more than 10 minutes ahead"),
    "negative step": (metric("val_top1_err", "1.0", -3), r"line 3 logs val_top1_err at step -3: an epoch metric's "
                                                         r"step is its epoch"),
    "NaN past the schedule": (metric("val_top1_err", "NaN", 7), r"line 3 logs val_top1_err at step 7: .* 1\.\.4"),
    "infinite value": (metric("val_loss", "Infinity", 4), r"line 3 gives val_loss the value inf, not a finite"),
    "metric from the future": (metric("val_loss", "1.0", 4, FUTURE_MS), r"line 3 is timed 9796458000000 ms"),
    "undeclared metric": (metric("val_acc", "99.0", 4), r"line 3 logs 'val_acc', a metric .* does not declare"),
    "run figure at an epoch's step": (metric("train_time_s", "1.0", 2), r"line 3 logs train_time_s at step 2"),
    "end reason set by a batch": ('{"kind": "batch", "metrics": [], "params": {}, "tags": {"cnnbench.end": "x"}}',
                                  r"line 3 sets tag cnnbench.end, which only a status write sets"),
    "artifact outside the run": ('{"kind": "dict", "name": "../../evil.json", "content": {}}',
                                 r"line 3 names artifact '\.\./\.\./evil\.json', which would land outside"),
    "third line cut short": ('{"kind": "batch", "metr',
                             r"line 3 is not JSON: Unterminated string starting at column 19;"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_outbox_is_refused_whole_and_leaves_the_record_as_it_was(case, store, killed_run, tmp_path, capsys):
    run_id = killed_run
    before = record(store, run_id)
    bad, pattern = BAD_LINES[case]
    path = outbox_file(tmp_path / OUTBOX_NAME, store, run_id, GOOD_FIRST.replace("NOW", str(now_ms())), bad)
    with pytest.raises(SystemExit) as code:
        cli.main(["sync", str(path)])
    err = capsys.readouterr().err
    assert code.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(rf"^cnnbench: error: {re.escape(str(path))}: .*{pattern}", err), err
    assert record(store, run_id) == before  # status, end reason, tags, params, every metric's history
    assert before["status"] == "KILLED" and path.exists()


def test_a_param_the_run_holds_with_another_value_is_reported_as_not_applied(store, killed_run, tmp_path, capsys):
    run_id = killed_run
    before = record(store, run_id)
    path = outbox_file(tmp_path / OUTBOX_NAME, store, run_id,
                       '{"kind": "batch", "metrics": [], "params": {"epochs": "9"}, "tags": {}}')
    assert sync.main([str(path)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{path}: 0 of 1 writes replayed into run {run_id} in {store} (the store held the rest, or a later status); "
        f"not applied, the run holds another value: param epochs='9' (the run holds '4')")
    assert record(store, run_id) == before


def test_epochs_a_resume_added_to_the_schedule_are_within_it(store, killed_run, tmp_path, capsys):
    run_id = killed_run
    path = outbox_file(tmp_path / OUTBOX_NAME, store, run_id,
                       '{"kind": "batch", "metrics": [], "params": {}, '
                       '"tags": {"cnnbench.resumed.epoch-3": "epochs: 4 -> 6"}}',
                       metric("val_top1_err", "44.0", 6))
    assert sync.main([str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: 2 writes replayed into run {run_id} in {store}"
    assert [m.step for m in MlflowClient(store).get_metric_history(run_id, "val_top1_err")] == [1, 2, 3, 6]


@pytest.mark.slow
def test_every_write_a_real_run_makes_passes_the_check(ws, capsys, monkeypatch):
    """The failing side of the check: what the engine itself writes (NaN figures of untimed epochs included) is
    never refused."""
    sent, send = [], Outbox.send

    def kept(self, write):
        sent.append(json.loads(json.dumps(write)))  # as a file holds it
        send(self, write)

    monkeypatch.setattr(Outbox, "send", kept)
    proc = launch_here(ws, capsys, "--epochs", "3", "--stop-after", "2", "--steps", "3", "--batch-size", "32",
                       "--target-top1-err", "50")
    assert proc.returncode == 0, proc.stderr
    _, writes = read_outbox(outbox_file(ws.root / OUTBOX_NAME, ws.uri, "run", *map(json.dumps, sent)), epochs=3)
    assert {write["kind"] for write in writes} == {"batch", "dataset", "dict", "status"}
