"""Is B really faster, more accurate, or quicker to its target than A, or is the difference within the noise?

  cnnbench compare --a "params.channels_last = 'False'" --b "params.channels_last = 'True'" --experiment cl
  cnnbench compare --a-runs 3f2c... 9ab1... --b-runs 77e0... --metric images/s

Each side is a set of FINISHED training runs: run ids, or an MLflow filter string over the runs of
--experiment (report and comparison runs left out). Per metric it prints each side's median over its runs with a
95 % interval, the ratio B / A with its interval, and a verdict where that interval excludes 1 and each side has
the runs that the verdict needs (train/studies/stats.py: the method, and how many runs; benchmarks/bootstrap.py
measures both). A run counts as its one value: images/s its train_images_per_sec (steady-state images ÷ seconds),
val-error its final_val_top1_err, time-to-target its time_to_target_s. Above the table it names the params on which A and B differ besides those their filters name; a
metric whose defining params differ (errors over other data sets, times to another target) is refused.
The table is also logged as the artifacts (compare.md, compare.json) of a run tagged cnnbench.report = compare in
A's experiment (B's, when A is a baseline file), which reports leave out.

As a regression gate for CI (train/studies/gate.py): --save-baseline FILE writes side A's per-run figures, and
--baseline FILE --b ... --fail-if "images/s < 0.95" exits 1 only when the whole interval of B / A lies past 0.95.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from train.engine.config import DEFAULTS, OneLineErrorParser
from train.engine.schema import TRAIN_IMAGES_PER_SEC, VAL_ERROR
from train.engine.tracking import open_store, search_all_runs, tracking_uri
from train.errors import UsageError
from train.studies import stats
from train.studies.figures import percent, significant
from train.studies.gate import Baseline, Gate, gate_line, load_baseline, parse_gate, save_baseline
from train.studies.helptext import LaidOutHelp
from train.studies.report import REPORT_TAG, existing_experiment, log_report
from train.studies.reports.common import NO_EFFECT, markdown_table

KIND = "compare"
TARGET_TAG = "cnnbench.target"  # the engine's sentence on whether and when a run reached its target


@dataclass(frozen=True)
class Quantity:
    metric: str  # the MLflow run metric read: one value per run
    show: Callable[[float], str]  # how a figure is printed
    above: str  # verdict when B / A is significantly above 1
    below: str  # ... and below
    defined_by: tuple[str, ...] = ()  # params that must be equal on every run for the figures to compare


DATA_SET = ("dataset", "val_size")  # an error or a time to target holds for one validation set
QUANTITIES = {
    "images/s": Quantity(TRAIN_IMAGES_PER_SEC, significant, "B faster", "B slower"),
    "val-error": Quantity(VAL_ERROR, percent, "B worse (higher error)", "B better (lower error)",
                          DATA_SET),
    "time-to-target": Quantity("time_to_target_s", significant, "B slower to target", "B faster to target",
                               (*DATA_SET, "target_top1_err")),
}
SAME = "no significant difference"


@dataclass(frozen=True)
class Side:
    label: str  # "A" or "B"
    chosen_by: str  # the filter, or the run ids, in words
    runs: list  # MLflow runs; empty for a baseline file's side
    filtered_on: frozenset[str] = frozenset()  # the params its filter names
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
        select_side(client, uri, "A", args.a, args.a_runs, args.experiment)
    if args.save_baseline:
        _save_side(side_a, args.metric, args.save_baseline)
        if not (args.b or args.b_runs):
            return 0
    sides = [side_a, select_side(client, uri, "B", args.b, args.b_runs, args.experiment)]
    _refuse_shared_runs(*sides)
    samples = _samples(sides, baseline, args.metric)
    for name in samples:
        refuse_mixed(name, sides)
    rows = [compare_quantity(name, *groups) for name, groups in samples.items()]
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
    return Side("A", f"baseline {path} ({baseline.chosen_by})", [], saved_ids=tuple(baseline.run_ids))


def _save_side(side: Side, asked: list[str] | None, path: str) -> None:
    if not side.runs:
        raise UsageError("--save-baseline takes side A from the store (--a or --a-runs), not from --baseline")
    samples = {name: groups[0] for name, groups in logged_samples([side], asked).items()}
    save_baseline(path, Baseline(side.chosen_by, side.run_ids, samples))
    print(f"baseline: {', '.join(samples)} of the {_runs(len(side.runs))} of side A ({side.chosen_by}) saved to {path}")


def _samples(sides: list[Side], baseline: Baseline | None, asked: list[str] | None) -> dict:
    """Per quantity, per side, per run: its samples; side A's from the baseline when there is one."""
    if baseline is None:
        return logged_samples(sides, asked)
    missing = [name for name in asked or [] if name not in baseline.samples]
    if missing:
        raise UsageError(f"--baseline holds no {', '.join(missing)} (it holds {', '.join(baseline.samples)})")
    found = logged_samples(sides[1:], asked or list(baseline.samples))
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

def select_side(client, uri: str, label: str, filter_string: str | None, run_ids: list[str] | None,
                experiment: str) -> Side:
    if filter_string is None and not run_ids:
        first = "--baseline FILE, " if label == "A" else ""
        raise UsageError(f"one of the arguments {first}--{label.lower()} --{label.lower()}-runs is required"
                         f"{' (or --save-baseline FILE alone)' if label == 'B' else ''}")
    if run_ids:
        return Side(label, "runs " + " ".join(run_ids), _sorted([_finished_run(client, run_id) for run_id in run_ids]))
    if not filter_string.strip():  # MLflow reads an empty filter as "every run"
        raise UsageError(f"--{label.lower()} is empty: give a filter, e.g. \"params.precision = 'bf16'\", or "
                         f"--{label.lower()}-runs RUN_ID ...")
    found = existing_experiment(client, uri, experiment)
    try:
        runs = search_all_runs(client, found.experiment_id, filter_string)
    except Exception as err:  # MLflow says what is wrong with the filter; its first line is enough
        raise UsageError(f"--{label.lower()} {filter_string!r}: {_first_line(err)}") from None
    runs = [r for r in runs if r.info.status == "FINISHED" and REPORT_TAG not in r.data.tags]
    if not runs:
        raise UsageError(f"--{label.lower()} {filter_string!r} matches no FINISHED training run "
                         f"of experiment {experiment!r}")
    return Side(label, f"filter {filter_string!r} in experiment {experiment!r}", _sorted(runs),
                frozenset(m.group(1) or m.group(2) or m.group(3) for m in _FILTERED_PARAM.finditer(filter_string)))


_FILTERED_PARAM = re.compile(r"""params\.(?:`([^`]+)`|"([^"]+)"|([\w.-]+))""")  # MLflow's ways to name a param


def _finished_run(client, run_id: str):
    try:
        run = client.get_run(run_id)
    except Exception as err:
        raise UsageError(f"no run {run_id!r} in the store: {_first_line(err)}") from None
    if REPORT_TAG in run.data.tags:
        raise UsageError(f"run {run_id} is a {run.data.tags[REPORT_TAG]} run ({REPORT_TAG}), not a training run: "
                         f"compare takes training runs")
    if run.info.status != "FINISHED":
        raise UsageError(f"run {run_id} is {run.info.status}: compare takes FINISHED runs only")
    return run


def _refuse_shared_runs(a: Side, b: Side) -> None:
    """A run on both sides is compared with itself: the verdict would say nothing about A against B."""
    shared = sorted({r.info.run_id for r in a.runs} & {r.info.run_id for r in b.runs})
    if shared:
        raise UsageError(f"run{'s' * (len(shared) > 1)} {', '.join(shared)} on both sides: A and B must be "
                         f"different runs")


def _sorted(runs: list) -> list:
    """Oldest first, as the output lists them."""
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---- what differs between the sides ----

def param_values(sides: list[Side], param: str) -> dict[str, list[str]]:
    """Side label -> the distinct values of ``param`` over its runs ("?" where a run did not log it)."""
    return {side.label: sorted({r.data.params.get(param, "?") for r in side.runs}) for side in sides}


def differing_params(sides: list[Side]) -> list[str]:
    """The params whose values differ between A and B, besides those a filter names and those that cannot change a
    figure (reports/common.py: NO_EFFECT)."""
    named = set().union(*(side.filtered_on for side in sides)) | NO_EFFECT
    logged = sorted({p for side in sides for r in side.runs for p in r.data.params} - named)
    return [p for p in logged if len({tuple(v) for v in param_values(sides, p).values()}) > 1]


def refuse_mixed(name: str, sides: list[Side]) -> None:
    """A metric is compared only over runs that agree on the params that define it: one line naming the first
    param that differs."""
    for param in QUANTITIES[name].defined_by:
        values = param_values(sides, param)
        if len({v for side_values in values.values() for v in side_values}) > 1:
            shown = "; ".join(f"{label}: {', '.join(v)}" for label, v in values.items())
            raise UsageError(f"{name}: the runs differ in {param} ({shown}), and {QUANTITIES[name].metric} over "
                             f"another {param} is another figure; choose runs that agree, or other metrics with "
                             f"--metric")


# ---- what is compared ----

def logged_samples(sides: list[Side], asked: list[str] | None) -> dict[str, list[list[list[float]]]]:
    """Per quantity, per side, per run: its samples. Without ``asked``, every quantity some run logged. A run
    without a compared quantity is a UsageError that names it."""
    found = {name: [[_values(run, QUANTITIES[name]) for run in side.runs] for side in sides]
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


def _values(run, q: Quantity) -> list[float]:
    """A run's one value of ``q``, as a list; empty when it logged none."""
    value = run.data.metrics.get(q.metric, math.nan)
    return [value] if math.isfinite(value) else []


@dataclass(frozen=True)
class Row:
    name: str
    a: stats.Interval
    b: stats.Interval
    ratio: stats.Interval
    verdict: str
    counts: tuple[str, str]  # how many runs each side had


def compare_quantity(name: str, groups_a: list[list[float]], groups_b: list[list[float]]) -> Row:
    q = QUANTITIES[name]
    interval_a, interval_b, ratio = stats.ratio_interval(groups_a, groups_b)
    verdict = (stats.withheld((len(groups_a), len(groups_b)), ratio)
               or {1: q.above, -1: q.below, 0: SAME}[stats.direction(ratio)])
    return Row(name, interval_a, interval_b, ratio, verdict, (_runs(len(groups_a)), _runs(len(groups_b))))


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
    method = (f"{stats.METHOD} A verdict only where B / A's interval excludes 1, with at least {stats.RUNS_NEEDED} "
              f"runs per side, and never from a zero-width interval (ties); benchmarks/bootstrap.py measures its "
              f"false alarms and coverage.")
    return "\n".join([*lines, _differences(sides), "", table, "", method, ""])


def _differences(sides: list[Side]) -> str:
    differing = differing_params(sides)
    if not differing:
        return "A and B differ in no other param."
    shown = "; ".join(f"{p} ({' vs '.join(', '.join(v) for v in param_values(sides, p).values())})"
                      for p in differing)
    return f"A and B also differ in: {shown}."


def _cell(interval: stats.Interval, name: str, count: str = "") -> str:
    show = _ratio if name == "ratio" else QUANTITIES[name].show
    text = show(interval.estimate)
    if interval.defined:
        text += f" [{show(interval.low)}–{show(interval.high)}]"
    return f"{text} ({count})" if count else text


def _ratio(value: float) -> str:
    """B / A to 0.001: near 1, where verdicts are decided, 3 significant digits would hide a 0.4 % difference."""
    return f"{value:.3f}"


def _record(sides: list[Side], rows: list[Row]) -> dict:
    """The comparison as numbers, for programs: what each side was, and each metric's intervals and verdict."""
    return {
        "method": {"confidence": stats.CONFIDENCE, "interval": stats.METHOD, "runs_needed": stats.RUNS_NEEDED},
        "sides": {side.label: {"chosen_by": side.chosen_by, "runs": side.run_ids}
                  for side in sides},
        "metrics": {row.name: {"metric": QUANTITIES[row.name].metric, "verdict": row.verdict,
                               **{key: _numbers(getattr(row, key)) for key in ("a", "b", "ratio")}} for row in rows},
    }


def _numbers(interval: stats.Interval) -> dict:
    """The interval for JSON: null where a bound does not exist (NaN is no JSON)."""
    return {key: value if math.isfinite(value) else None for key, value in vars(interval).items()}
