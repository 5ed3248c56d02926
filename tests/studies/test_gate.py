"""The regression gate: ``cnnbench compare --save-baseline FILE``, then ``--baseline FILE --b ... --fail-if ...``
(train/studies/gate.py), over planted runs logged straight into a temp MLflow store."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.studies.test_compare import compare, log_run, rows_of, store, windows_of  # noqa: F401 (fixture)
from train.errors import UsageError
from train.studies.compare import QUANTITIES
from train.studies.gate import Gate, load_baseline, parse_gate
from train.studies.stats import Interval


def baseline_of(capsys, ws, path, precision: str = "fp32", *more: str) -> tuple[int, str]:
    code, out, err = compare(capsys, ws, "--a", f"params.precision = '{precision}'", "--save-baseline", str(path),
                             *more)
    assert code == 0, err
    return code, out


def gate_of(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("gate ")]
    return line


def interval_of(line: str) -> tuple[float, float]:
    """``gate ...: B / A = 0.792 [0.740–0.865]: ...`` -> (0.740, 0.865)."""
    low, high = line.split("[", 1)[1].split("]", 1)[0].split("–")
    return float(low), float(high)


def planted(client, experiment, levels: dict[str, float], seed: int = 0) -> None:
    """Three runs of each precision, at its level of images/s, with the project's window and run noise."""
    rng = np.random.default_rng(seed)
    for _ in range(3):
        for precision, level in levels.items():
            log_run(client, experiment, precision, windows_of(rng, level),
                    {"final_val_top1_err": rng.normal(10, 0.3)})


def test_a_clearly_slower_b_fails_the_gate_with_exit_1(store, capsys, tmp_path):
    ws, client, experiment = store
    planted(client, experiment, {"fp32": 100.0, "bf16": 80.0})
    _, saved = baseline_of(capsys, ws, tmp_path / "base.json")
    assert saved.startswith("baseline: images/s, val-error of the 3 runs of side A")
    record = json.loads((tmp_path / "base.json").read_text())
    assert [len(run) for run in record["samples"]["images/s"]] == [1, 1, 1]  # every run's one images/s
    code, out, err = compare(capsys, ws, "--baseline", str(tmp_path / "base.json"), "--b", "params.precision = 'bf16'",
                             "--fail-if", "images/s < 0.95")
    assert code == 1, err
    line = gate_of(out)
    assert line.startswith("gate images/s < 0.95: B / A = ")
    assert line.endswith("FAIL: the whole interval lies below 0.95")
    low, high = interval_of(line)
    assert low <= 0.8 <= high < 0.95  # covers the planted ratio, and lies wholly past the gate
    assert rows_of(out)["images/s"]["verdict"] == "B slower"


def test_a_against_a_passes_and_prints_the_interval(store, capsys, tmp_path):
    ws, client, experiment = store
    planted(client, experiment, {"fp32": 100.0})
    baseline_of(capsys, ws, tmp_path / "base.json")
    code, out, _ = compare(capsys, ws, "--baseline", str(tmp_path / "base.json"), "--b", "params.precision = 'fp32'",
                           "--fail-if", "images/s < 0.95", "--fail-if", "val-error > 1.05")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("gate ")]
    assert lines[0].startswith("gate images/s < 0.95: B / A = 1.000 [0.")
    assert lines[0].endswith("pass: the interval does not lie wholly below 0.95")
    assert lines[1].startswith("gate val-error > 1.05: B / A = 1.000 [")


def test_an_interval_straddling_the_threshold_passes(store, capsys, tmp_path):
    ws, client, experiment = store
    planted(client, experiment, {"fp32": 100.0, "bf16": 95.0}, seed=4)
    baseline_of(capsys, ws, tmp_path / "base.json")
    code, out, _ = compare(capsys, ws, "--baseline", str(tmp_path / "base.json"), "--b", "params.precision = 'bf16'",
                           "--fail-if", "images/s < 0.95")
    line = gate_of(out)
    low, high = interval_of(line)
    assert low < 0.95 < high, line  # the planted 5 % slow-down: the interval holds 0.95
    assert code == 0 and line.endswith("pass: the interval does not lie wholly below 0.95")


def test_the_gate_fails_only_when_the_whole_interval_is_past_it():
    below, above = Gate("images/s", "<", 0.95), Gate("time-to-target", ">", 1.10)
    assert below.fails(Interval(0.90, 0.88, 0.949)) and not below.fails(Interval(0.93, 0.90, 0.951))
    assert above.fails(Interval(1.20, 1.101, 1.3)) and not above.fails(Interval(1.20, 1.09, 1.3))


MALFORMED = ["images/s <", "images/s = 0.95", "speed < 0.95", "images/s < -1", "images/s < 0", "images/s < 0.95 or so",
             ""]


@pytest.mark.parametrize("text", MALFORMED)
def test_a_malformed_gate_is_refused_with_what_a_gate_looks_like(text):
    with pytest.raises(UsageError) as refused:
        parse_gate(text, QUANTITIES)
    assert str(refused.value).startswith(f"--fail-if {text!r}: write QUANTITY < RATIO")


def test_a_malformed_gate_is_one_line_and_exit_2(store, capsys):
    ws, client, experiment = store
    planted(client, experiment, {"fp32": 100.0, "bf16": 80.0})
    code, out, err = compare(capsys, ws, "--a", "params.precision = 'fp32'", "--b", "params.precision = 'bf16'",
                             "--fail-if", "images/s = 0.95")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("cnnbench: error: --fail-if 'images/s = 0.95': write QUANTITY < RATIO"), err


@pytest.mark.parametrize("content", ["{", '{"format": "other"}', '{"format": "cnnbench-baseline/1", "samples": {}}'])
def test_a_file_that_is_no_baseline_is_refused(tmp_path, content):
    (tmp_path / "base.json").write_text(content)
    with pytest.raises(UsageError, match=f"^--baseline {tmp_path / 'base.json'}: "):
        load_baseline(str(tmp_path / "base.json"), QUANTITIES)


def test_a_missing_baseline_is_one_line_and_exit_2(store, capsys, tmp_path):
    ws, client, experiment = store
    planted(client, experiment, {"fp32": 100.0})
    code, out, err = compare(capsys, ws, "--baseline", str(tmp_path / "none.json"), "--b", "params.precision = 'fp32'")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"cnnbench: error: --baseline {tmp_path / 'none.json'}: No such file"), err


def test_parse_gate_reads_both_directions():
    assert parse_gate(" time-to-target>1.1 ", ["time-to-target"]) == Gate("time-to-target", ">", 1.1)
    assert str(parse_gate("images/s < 0.95", ["images/s"])) == "images/s < 0.95"
