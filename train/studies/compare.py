"""Is B really faster, more accurate, or quicker to its target than A, or is the difference within the noise?

  cnnbench compare --a "params.channels_last = 'False'" --b "params.channels_last = 'True'" --experiment cl
  cnnbench compare --a-runs 3f2c... 9ab1... --b-runs 77e0... --metric images/s

Each side is a set of FINISHED training runs: run ids, or an MLflow filter string over the runs of
--experiment (report and comparison runs left out). Per metric it prints each side's median with its 95 %
bootstrap interval, the ratio B / A with its interval, and a verdict where that interval excludes 1.
images/s is resampled from each run's timing windows (train_images_per_sec_window), the other metrics from
one value per run: the runs are drawn with replacement, then each drawn run's windows (train/studies/stats.py
says exactly how). The table is also logged as the artifacts (compare.md, compare.json) of a run tagged
cnnbench.report = compare in A's experiment (B's, when A is a baseline file), which reports leave out.

As a regression gate for CI (train/studies/gate.py): --save-baseline FILE writes side A's per-run figures, and
--baseline FILE --b ... --fail-if "images/s < 0.95" exits 1 only when the whole interval of B / A lies past 0.95.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from train.engine.config import DEFAULTS, OneLineErrorParser
from train.engine.tracking import open_store, search_all_runs, tracking_uri
from train.errors import UsageError
from train.studies import stats
from train.studies.figures import percent, significant
from train.studies.gate import Baseline, Gate, gate_line, load_baseline, parse_gate, save_baseline
from train.studies.helptext import LaidOutHelp
from train.studies.report import REPORT_TAG, log_report
from train.studies.reports.common import markdown_table

KIND = "compare"
TARGET_TAG = "cnnbench.target"  # the engine's sentence on whether and when a run reached its target


@dataclass(frozen=True)
class Quantity:
    metric: str  # the MLflow metric read
    per_window: bool  # True: the run's window history; False: the run's one value
    show: Callable[[float], str]  # how a figure is printed
    above: str  # verdict when B / A is significantly above 1
    below: str  # ... and below


QUANTITIES = {
    "images/s": Quantity("train_images_per_sec_window", True, significant, "B faster", "B slower"),
    "val-error": Quantity("final_val_top1_err", False, percent, "B worse (higher error)", "B better (lower error)"),
    "time-to-target": Quantity("time_to_target_s", False, significant, "B slower to target", "B faster to target"),
}
SAME = "no significant difference"
ENOUGH_RUNS = 3  # fewer runs per side and a verdict is about the runs, not their configurations (README)


@dataclass(frozen=True)
class Side:
    label: str  # "A" or "B"
    chosen_by: str  # the filter, or the run ids, in words
    runs: list  # MLflow runs; empty for a baseline file's side
    saved_ids: tuple[str, ...] = ()  # a baseline file's runs

    @property
    def run_ids(self) -> list[str]:
        return [r.info.run_id for r in self.runs] or list(self.saved_ids)


def main(argv: list[str] | None = None, prog: str = "cnnbench compare") -> int:
    args = _parser(prog).parse_args(argv)
    gates = [parse_gate(text, QUANTITIES) for text in args.fail_if or []]
    uri = tracking_uri(args.tracking_uri)
    client = open_store(uri)
    baseline = load_baseline(args.baseline, QUANTITIES) if args.baseline else None
    side_a = _baseline_side(args.baseline, baseline) if baseline else \
        select_side(client, "A", args.a, args.a_runs, args.experiment)
    if args.save_baseline:
        _save_side(client, side_a, args.metric, args.save_baseline)
        if not (args.b or args.b_runs):
            return 0
    sides = [side_a, select_side(client, "B", args.b, args.b_runs, args.experiment)]
    rows = [compare_quantity(name, *groups) for name, groups in _samples(client, sides, baseline, args.metric).items()]
    markdown = render(sides, rows)
    print(markdown, end="")
    stored = next(side for side in sides if side.runs)  # A, unless A is a baseline file
    experiment = client.get_experiment(stored.runs[0].info.experiment_id).name
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "compare.md").write_text(markdown)
        (Path(tmp) / "compare.json").write_text(json.dumps(_record(sides, rows), indent=1))
        run_id = log_report(uri, experiment, KIND, [r for side in sides for r in side.runs], Path(tmp))
    print(f"\nlogged as the artifacts (compare.md, compare.json) of run {run_id} in experiment {experiment}")
    return _judge(gates, rows)


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description=__doc__, formatter_class=LaidOutHelp)
    side = p.add_mutually_exclusive_group()
    side.add_argument("--a", metavar="FILTER", help="side A: an MLflow filter over --experiment's runs, "
                                                    "e.g. \"params.precision = 'bf16'\"")
    side.add_argument("--a-runs", nargs="+", metavar="RUN_ID", help="side A: run ids")
    side.add_argument("--baseline", metavar="FILE", help="side A: the runs saved in FILE by --save-baseline")
    side = p.add_mutually_exclusive_group()
    side.add_argument("--b", metavar="FILTER", help="side B: an MLflow filter over --experiment's runs")
    side.add_argument("--b-runs", nargs="+", metavar="RUN_ID", help="side B: run ids")
    p.add_argument("--metric", nargs="+", choices=QUANTITIES, metavar="METRIC",
                   help=f"what to compare: {', '.join(QUANTITIES)} (default: each of them that the runs logged)")
    p.add_argument("--experiment", default=DEFAULTS.experiment,
                   help=f"experiment the filters search (default: {DEFAULTS.experiment})")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    gate = p.add_argument_group("regression gate (train/studies/gate.py)")
    gate.add_argument("--save-baseline", metavar="FILE",
                      help="write side A's per-run figures to FILE, for a later --baseline FILE (side B optional)")
    gate.add_argument("--fail-if", action="append", metavar="GATE",
                      help="\"QUANTITY < RATIO\" or \"QUANTITY > RATIO\" on B / A, e.g. \"images/s < 0.95\": exit 1 "
                           "when the whole 95 %% interval of B / A lies past RATIO, else 0; repeatable")
    return p


# ---- the regression gate ----

def _baseline_side(path: str, baseline: Baseline) -> Side:
    return Side("A", f"baseline {path} ({baseline.chosen_by})", [], tuple(baseline.run_ids))


def _save_side(client, side: Side, asked: list[str] | None, path: str) -> None:
    if not side.runs:
        raise UsageError("--save-baseline takes side A from the store (--a or --a-runs), not from --baseline")
    samples = {name: groups[0] for name, groups in logged_samples(client, [side], asked).items()}
    save_baseline(path, Baseline(side.chosen_by, side.run_ids, samples))
    print(f"baseline: {', '.join(samples)} of the {_runs(len(side.runs))} of side A ({side.chosen_by}) saved to {path}")


def _samples(client, sides: list[Side], baseline: Baseline | None, asked: list[str] | None) -> dict:
    """Per quantity, per side, per run: its samples; side A's from the baseline when there is one."""
    if baseline is None:
        return logged_samples(client, sides, asked)
    missing = [name for name in asked or [] if name not in baseline.samples]
    if missing:
        raise UsageError(f"--baseline holds no {', '.join(missing)} (it holds {', '.join(baseline.samples)})")
    found = logged_samples(client, sides[1:], asked or list(baseline.samples))
    return {name: [baseline.samples[name], groups[0]] for name, groups in found.items()}


def _judge(gates: list[Gate], rows: list[Row]) -> int:
    """Each gate's line; 1 when one fails, else 0."""
    by_name = {row.name: row for row in rows}
    for gate in gates:
        if gate.quantity not in by_name:
            raise UsageError(f"--fail-if {gate}: {gate.quantity} was not compared (give it in --metric, or gate "
                             f"one of {', '.join(by_name)})")
    lines = [gate_line(gate, by_name[gate.quantity].ratio) for gate in gates]
    print("\n".join(["", *lines]) if lines else "", end="\n" if lines else "")
    return int(any(gate.fails(by_name[gate.quantity].ratio) for gate in gates))


# ---- the runs of each side ----

def select_side(client, label: str, filter_string: str | None, run_ids: list[str] | None, experiment: str) -> Side:
    if filter_string is None and not run_ids:
        first = "--baseline FILE, " if label == "A" else ""
        raise UsageError(f"one of the arguments {first}--{label.lower()} --{label.lower()}-runs is required"
                         f"{' (or --save-baseline FILE alone)' if label == 'B' else ''}")
    if run_ids:
        return Side(label, "runs " + " ".join(run_ids), _sorted([_finished_run(client, run_id) for run_id in run_ids]))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise UsageError(f"--{label.lower()}: no experiment {experiment!r} to filter (give --experiment)")
    try:
        runs = search_all_runs(client, found.experiment_id, filter_string)
    except Exception as err:  # MLflow says what is wrong with the filter; its first line is enough
        raise UsageError(f"--{label.lower()} {filter_string!r}: {_first_line(err)}") from None
    runs = [r for r in runs if r.info.status == "FINISHED" and REPORT_TAG not in r.data.tags]
    if not runs:
        raise UsageError(f"--{label.lower()} {filter_string!r} matches no FINISHED training run "
                         f"of experiment {experiment!r}")
    return Side(label, f"filter {filter_string!r} in experiment {experiment!r}", _sorted(runs))


def _finished_run(client, run_id: str):
    try:
        run = client.get_run(run_id)
    except Exception as err:
        raise UsageError(f"no run {run_id!r} in the store: {_first_line(err)}") from None
    if run.info.status != "FINISHED":
        raise UsageError(f"run {run_id} is {run.info.status}: compare takes FINISHED runs only")
    return run


def _sorted(runs: list) -> list:
    """Oldest first, as the output lists them."""
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---- what is compared ----

def logged_samples(client, sides: list[Side], asked: list[str] | None) -> dict[str, list[list[list[float]]]]:
    """Per quantity, per side, per run: its samples. Without ``asked``, every quantity some run logged. A run
    without a compared quantity is a UsageError that names it."""
    found = {name: [[_values(client, run, QUANTITIES[name]) for run in side.runs] for side in sides]
             for name in asked or QUANTITIES}
    if not asked:
        found = {name: groups for name, groups in found.items() if any(any(side) for side in groups)}
        if not found:
            raise UsageError(f"the runs logged none of {', '.join(q.metric for q in QUANTITIES.values())}")
    for name, groups in found.items():
        for side, side_groups in zip(sides, groups):
            for run, values in zip(side.runs, side_groups):
                if not values:
                    raise UsageError(_missing(name, run, side))
    return found


def _missing(name: str, run, side: Side) -> str:
    why = run.data.tags.get(TARGET_TAG, "")
    return (f"{name}: run {run.info.run_id} ({run.info.run_name}) of side {side.label} has no "
            f"{QUANTITIES[name].metric}{f' ({why})' if why else ''}; choose others with --metric")


def _values(client, run, q: Quantity) -> list[float]:
    """A run's samples of ``q``: its windows' images/s (one per step: a resumed run's rewrite counts once), or its
    one value; empty when it logged none."""
    if q.per_window:
        by_step = {m.step: m.value for m in client.get_metric_history(run.info.run_id, q.metric)}
        return [by_step[step] for step in sorted(by_step) if math.isfinite(by_step[step])]
    value = run.data.metrics.get(q.metric, math.nan)
    return [value] if math.isfinite(value) else []


@dataclass(frozen=True)
class Row:
    name: str
    a: stats.Interval
    b: stats.Interval
    ratio: stats.Interval
    verdict: str
    counts: tuple[str, str]  # how many runs (and windows) each side had


def compare_quantity(name: str, groups_a: list[list[float]], groups_b: list[list[float]]) -> Row:
    q = QUANTITIES[name]
    interval_a, interval_b, ratio = stats.ratio_interval(groups_a, groups_b)
    single = [label for label, groups in (("A", groups_a), ("B", groups_b)) if sum(map(len, groups)) == 1]
    return Row(name, interval_a, interval_b, ratio, _verdict(q, ratio, single),
               (_count(groups_a, q), _count(groups_b, q)))


def _verdict(q: Quantity, ratio: stats.Interval, single: list[str]) -> str:
    if single:  # one value has no spread to resample: its interval is the value, and says nothing
        return f"no verdict: one value on side {' and '.join(single)}"
    if not math.isfinite(ratio.estimate):
        return "undefined (A's median is 0)"
    return {1: q.above, -1: q.below, 0: SAME}[stats.direction(ratio)]


def _count(groups: list[list[float]], q: Quantity) -> str:
    return f"{_runs(len(groups))}, {sum(map(len, groups))} windows" if q.per_window else _runs(len(groups))


def _runs(count: int) -> str:
    return f"{count} run{'s' if count > 1 else ''}"


# ---- output ----

def render(sides: list[Side], rows: list[Row]) -> str:
    table = markdown_table(
        ["metric", "A: median [95 % CI]", "B: median [95 % CI]", "B / A [95 % CI]", "verdict"],
        [[f"{row.name} (`{QUANTITIES[row.name].metric}`)", _cell(row.a, row.name, row.counts[0]),
          _cell(row.b, row.name, row.counts[1]), _cell(row.ratio, "ratio"), row.verdict] for row in rows])
    lines = [f"{side.label}: {side.chosen_by} ({_runs(len(side.run_ids))}: "
             f"{', '.join(run_id[:8] for run_id in side.run_ids)})" for side in sides]
    method = (f"Medians over runs of each run's median; 95 % percentile-bootstrap intervals, "
              f"{stats.N_RESAMPLES:,} resamples, seed {stats.SEED}. images/s: the runs drawn with replacement, then "
              f"each drawn run's timing windows (one run: its windows); other metrics: the runs, one value each. "
              f"B / A from A's and B's resamples drawn independently; a verdict only where its interval excludes 1. "
              f"{stats.FEW_VALUES}")
    return "\n".join([*lines, "", table, "", method, *_caution(sides), ""])


def _caution(sides: list[Side]) -> list[str]:
    """Few runs: the intervals miss most of the run-to-run variation, and a verdict is about these runs only."""
    few = [f"{side.label} has {_runs(len(side.run_ids))}" for side in sides if len(side.run_ids) < ENOUGH_RUNS]
    if not few:
        return []
    return ["", f"Caution: {' and '.join(few)}. With one run an interval holds only the timing noise within it, "
                f"with two the run-to-run variation is barely sampled: a verdict then says that these runs differ, "
                f"not that their configurations do. Repeat them ({ENOUGH_RUNS} or more per side; suite `repeat: N`)."]


def _cell(interval: stats.Interval, name: str, count: str = "") -> str:
    show = _ratio if name == "ratio" else QUANTITIES[name].show
    text = f"{show(interval.estimate)} [{show(interval.low)}–{show(interval.high)}]"
    return f"{text} ({count})" if count else text


def _ratio(value: float) -> str:
    """B / A to 0.001: near 1, where verdicts are decided, 3 significant digits would hide a 0.4 % difference."""
    return f"{value:.3f}"


def _record(sides: list[Side], rows: list[Row]) -> dict:
    """The comparison as numbers, for programs: what each side was, and each metric's intervals and verdict."""
    return {
        "method": {"resamples": stats.N_RESAMPLES, "seed": stats.SEED, "confidence": stats.CONFIDENCE,
                   "interval": "percentile bootstrap; runs, then windows within runs"},
        "sides": {side.label: {"chosen_by": side.chosen_by, "runs": side.run_ids}
                  for side in sides},
        "metrics": {row.name: {"metric": QUANTITIES[row.name].metric, "verdict": row.verdict,
                               **{key: vars(getattr(row, key)) for key in ("a", "b", "ratio")}} for row in rows},
    }
