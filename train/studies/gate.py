"""A regression gate for CI: side A saved once as a baseline file, side B held against it, and a threshold on B / A.

  cnnbench compare --a "tags.branch = 'main'" --save-baseline baseline.json
  cnnbench compare --baseline baseline.json --b "tags.branch = 'pr'" --fail-if "images/s < 0.95"

A baseline holds the per-run figures ``cnnbench compare`` resamples (each run's timing-window images/s, its final
error and time to target), so B / A gets the same 95 % interval as two sets of runs in one store. A gate
``QUANTITY < X`` fails only when the whole interval of B / A lies below X (``> X``: above X): a difference the runs
cannot tell from noise never fails a build. Exit 1 when a gate fails, 0 otherwise; the interval is printed
either way.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from train.errors import UsageError
from train.studies.stats import Interval

FORMAT = "cnnbench-baseline/1"
_GATE = re.compile(r"\s*(?P<quantity>\S+)\s*(?P<op>[<>])\s*(?P<threshold>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*")


@dataclass(frozen=True)
class Gate:
    quantity: str  # a key of compare.QUANTITIES
    op: str  # "<" or ">"
    threshold: float  # on B / A

    def __str__(self) -> str:
        return f"{self.quantity} {self.op} {self.threshold:g}"

    def fails(self, ratio: Interval) -> bool:
        """True only when the whole interval of B / A is past the threshold."""
        return ratio.high < self.threshold if self.op == "<" else ratio.low > self.threshold


def parse_gate(text: str, quantities) -> Gate:
    """``"images/s < 0.95"`` as a Gate; anything else is a UsageError naming what a gate looks like."""
    match = _GATE.fullmatch(text)
    if match is None or match["quantity"] not in quantities or float(match["threshold"]) <= 0:
        raise UsageError(f"--fail-if {text!r}: write QUANTITY < RATIO or QUANTITY > RATIO, RATIO a number > 0 for "
                         f"B / A, QUANTITY one of {', '.join(quantities)} (e.g. --fail-if \"images/s < 0.95\")")
    return Gate(match["quantity"], match["op"], float(match["threshold"]))


def gate_line(gate: Gate, ratio: Interval) -> str:
    """What the gate found, with B / A's interval."""
    where = "below" if gate.op == "<" else "above"
    verdict = (f"FAIL: the whole interval lies {where} {gate.threshold:g}" if gate.fails(ratio) else
               f"pass: the interval does not lie wholly {where} {gate.threshold:g}")
    return f"gate {gate}: B / A = {ratio.estimate:.3f} [{ratio.low:.3f}–{ratio.high:.3f}]: {verdict}"


@dataclass(frozen=True)
class Baseline:
    chosen_by: str  # how side A was chosen when it was saved
    run_ids: list[str]
    samples: dict[str, list[list[float]]]  # per quantity, per run: its samples


def save_baseline(path: str, baseline: Baseline) -> None:
    Path(path).write_text(json.dumps({"format": FORMAT, "chosen_by": baseline.chosen_by, "runs": baseline.run_ids,
                                      "samples": baseline.samples}, indent=1))


def load_baseline(path: str, quantities) -> Baseline:
    """The baseline in ``path``; a file that is missing or is not one is a UsageError."""
    try:
        record = json.loads(Path(path).read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        samples = {name: [[float(v) for v in run] for run in runs] for name, runs in record["samples"].items()}
        unknown = set(samples) - set(quantities)
        if unknown or not samples or any(not run for runs in samples.values() for run in runs):
            raise ValueError(f"its samples are not per-run figures of {', '.join(quantities)}")
        return Baseline(str(record["chosen_by"]), [str(r) for r in record["runs"]], samples)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"--baseline {path}: {getattr(err, 'strerror', None) or err}") from None
