"""``cnnbench sync FILE``: replays what a run kept, idempotently; bad files and refusals end in one line."""
from __future__ import annotations

import shutil

import pytest

from mlflow import MlflowClient
from tests.engine.test_tracking import resume, stopped_while_away
from train import cli
from train.engine import sync
from train.engine.outbox import OUTBOX_NAME
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

