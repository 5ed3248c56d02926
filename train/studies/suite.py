"""Benchmark suites: a grid of trainings in a YAML file, each point run as its own job through its launcher.

  cnnbench suite run configs/smoke.yaml                 # every point without a FINISHED run
  cnnbench suite run configs/throughput.yaml --dry-run  # the grid's size and commands; runs nothing
  cnnbench suite plan configs/cifar_table.yaml          # one shell command per point, for Slurm & co.

A suite file (configs/*.yaml):

  name: smoke             # names the MLflow experiment and tags every run
  experiment: smoke-2024  # optional: another experiment name
  description: ...        # optional, free text
  settings:               # what every point gets: launcher flags, _ for -
    dataset: digits
    epochs: 1
  grid:                   # axes; the points are their product, in file order
    precision: [fp32, bf16]
    model:                # any other name: settings that vary together
      - {arch: resnet-20, batch_size: 128}
      - {arch: resnet-164, batch_size: 64}
  repeat: 3               # optional: every point with seeds s, s+1, s+2

Besides the engine's settings, launcher (single, ddp or horovod) and world_size say how a point runs:
python launchers/single.py, torchrun --nproc_per_node=N launchers/ddp.py, or horovodrun -np N python
launchers/horovod.py. Mind the precedence: a setting given here is a flag, and flags beat a recipe.

Each point is one MLflow run, named after its net and the settings that tell it from the other points ("resnet-20
batch_size=32", a repeat's seed last) and tagged with the suite's name (cnnbench.suite) and all the point's
settings (cnnbench.point). cnnbench suite run skips the points that already have a FINISHED run, so a suite
killed halfway continues where it stopped. Each point's output goes to suite-logs/SUITE_NAME/point-NNNN.log
(--log-dir); git ignores suite-logs/.

repeat: N runs every point N times, with seeds s, s + 1, ..., s + N - 1 (s: the seed of settings, else the
engine's default), so that reports and cnnbench compare can give intervals over repeats. The repeats are the
outermost axis: every point runs once before any runs a second time, so a drift of the machine over the
suite's hours falls on every point alike instead of on the last ones.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import itertools
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml
from tqdm import tqdm

from train.engine.config import DEFAULTS, OneLineErrorParser, config_from_args
from train.engine.launch import distributed_parser, training_parser
from train.engine.signals import raise_on_sigterm
from train.engine.tracking import open_store, search_all_runs, tracking_uri
from train.errors import UsageError
from train.models import resolve_model
from train.studies.helptext import LaidOutHelp
from train.studies.report import writable_folder

SUITE_TAG, POINT_TAG = "cnnbench.suite", "cnnbench.point"
LAUNCHER_DIR = Path(__file__).resolve().parents[2] / "launchers"
TOP_KEYS = ("name", "experiment", "description", "settings", "grid", "repeat")
LAUNCHERS = ("single", "ddp", "horovod")
RUN_DEFAULTS = {"launcher": "single", "world_size": 1}  # how a point runs; every other key is an engine flag
SUITE_SETS = frozenset({"tags", "experiment", "tracking_uri", "run_name", "resume", "help"})
LOG_ROOT = "suite-logs"  # .gitignore keeps it out of git
MAX_POINTS = 10_000  # each point is a training job; checking 10,000 takes ~3 s, a few million would fill memory
STOP_GRACE_S = 60  # a stopped point gets this long to close its MLflow run before it is killed


@dataclass(frozen=True)
class Point:
    settings: dict  # every setting of the job: the suite's, the grid's, launcher and world_size
    varied: tuple[str, ...]  # the keys the grid set, in file order

    @property
    def label(self) -> str:
        return " ".join(f"{key}={_show(self.settings[key])}" for key in self.varied)

    def name(self, keys: Iterable[str]) -> str:
        """The net, then ``keys`` as key=value, a repeat's seed last: ``alexnet batch_size=64 seed=1``."""
        shown = sorted((key for key in keys if key != "arch"), key=lambda key: key == "seed")
        return " ".join([str(self.settings.get("arch", DEFAULTS.arch)),
                         *(f"{key}={_show(self.settings[key])}" for key in shown)])

    @property
    def key(self) -> str:
        """The point's identity in its run's tag: all its settings, so a changed setting is a new point."""
        return point_key(self.settings)


def point_key(settings: dict) -> str:
    """``settings`` as a point's identity, its seed always in it (the engine's default where none is given): the
    point a suite ran before ``repeat: N`` was added to it is the repeat with that seed, not a new point."""
    return json.dumps({"seed": DEFAULTS.data.seed, **settings}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Suite:
    name: str
    experiment: str
    axes: dict[str, int]  # axis -> number of values
    points: tuple[Point, ...]

    @property
    def size(self) -> str:
        return f"{len(self.points)} points = " + " × ".join(f"{axis} {n}" for axis, n in self.axes.items())

    @functools.cached_property
    def run_names(self) -> dict[str, str]:
        """Point key -> its MLflow run's name: the net and the grid's settings that take two values or more, so
        that the UI's runs table tells the points apart at a glance (the suite is the experiment and a tag
        already); where two points would share a name, every point names all the settings the grid gives it."""
        values = defaultdict(set)
        for point in self.points:
            for key in point.varied:
                values[key].add(_show(point.settings[key]))
        names = {p.key: p.name(key for key in p.varied if len(values[key]) > 1) for p in self.points}
        if len(set(names.values())) < len(names):
            names = {p.key: p.name(p.varied) for p in self.points}
        return names


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def main(argv: list[str] | None = None, prog: str = "cnnbench suite") -> int:
    args = _parser(prog).parse_args(argv)
    suite = load_suite(Path(args.file))
    if args.action == "plan":
        print(f"# suite {suite.name}: {suite.size}", file=sys.stderr)
        print_commands([point_command(p, suite, args.tracking_uri) for p in suite.points])
        return 0
    raise_on_sigterm()
    return run_suite(suite, args)


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description=__doc__, formatter_class=LaidOutHelp)
    actions = p.add_subparsers(dest="action", required=True, metavar="{run,plan}")
    see_format = f"The suite file's format: {prog} --help."
    run = actions.add_parser("run", help="run every point without a FINISHED run, one job after another",
                             description=f"Run every point of a suite that has no FINISHED run yet, one job after "
                                         f"another. {see_format}", formatter_class=LaidOutHelp)
    plan = actions.add_parser("plan", help="print one shell command per point (all points), run nothing",
                              description=f"Print one shell command per point of a suite (all points), for a "
                                          f"scheduler; run nothing. {see_format}", formatter_class=LaidOutHelp)
    for sub in (run, plan):
        sub.add_argument("file", help="suite YAML file, e.g. configs/smoke.yaml")
        sub.add_argument("--tracking-uri", help="MLflow store of the runs, passed to every point "
                                                "(default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    run.add_argument("--dry-run", action="store_true", help="print the grid size and what would run; run nothing")
    run.add_argument("--log-dir", help=f"each point's output goes to LOG_DIR/point-NNNN.log "
                                       f"(default: {LOG_ROOT}/SUITE_NAME; git ignores {LOG_ROOT}/)")
    return p


# ---- reading a suite file: every error names the file, line and key ----

class _Doc:
    """The YAML node tree of a suite file, so that every value keeps the line it came from."""

    def __init__(self, path: Path):
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot read suite file {path}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise UsageError(f"cannot read suite file {path}: not UTF-8 text (byte {err.start})") from None
        self.loader = yaml.SafeLoader(text)
        try:
            self.root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            raise UsageError(f"{path}:{mark.line + 1}: not valid YAML: {err.problem or err.context}") from None
        if self.root is None:
            raise UsageError(f"{path}: empty suite file")

    def error(self, node: yaml.Node, key: str, message: str) -> UsageError:
        return UsageError(f"{self.path}:{node.start_mark.line + 1}: {key}: {message}")

    def value(self, node: yaml.Node):
        """The node as plain data; what safe loading cannot build (a ``!!python/...`` tag, an alias inside itself)
        is refused in one line, having run nothing."""
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark or node.start_mark
            raise UsageError(f"{self.path}:{mark.line + 1}: {err.problem or err.context} (a suite file holds plain "
                             f"values: no !!python tags, no alias inside its own anchor)") \
                from None

    def mapping(self, node: yaml.Node, key: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """``{name: (key node, value node)}``; YAML merge keys (``<<: *anchor``) resolved."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "must be a mapping of names to values")
        self.loader.flatten_mapping(node)
        pairs: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = self.value(key_node)
            if name in pairs:
                first = pairs[name][0].start_mark.line + 1
                raise self.error(key_node, str(name), f"given twice (first on line {first})")
            pairs[name] = (key_node, value_node)
        return pairs

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, "must be a list of values, e.g. [a, b]")
        if not node.value:
            raise self.error(node, key, "empty list: the grid would have no points")
        return node.value


def load_suite(path: Path) -> Suite:
    """Read and check a suite file: unknown keys, unknown archs, bad values and empty grids are refused."""
    doc = _Doc(path)
    top = doc.mapping(doc.root, "suite file")
    for name, (key_node, _) in top.items():
        if name not in TOP_KEYS:
            raise doc.error(key_node, str(name), f"unknown key{_did_you_mean(name, TOP_KEYS)}; "
                                                 f"a suite file has {', '.join(TOP_KEYS)}")
    name = _suite_name(doc, top, default=path.stem)
    experiment = str(doc.value(top["experiment"][1])) if "experiment" in top else name
    fixed = _settings(doc, top["settings"][1], "settings") if "settings" in top else {}
    if "grid" not in top:
        raise doc.error(doc.root, "grid", "missing: a suite needs at least one axis, e.g. grid: {arch: [resnet-20]}")
    grid_key, grid_node = top["grid"]
    axes = _axes(doc, grid_node, fixed)
    if "repeat" in top:
        axes = {"repeat": _repeats(doc, top["repeat"][1], fixed, axes), **axes}
    _check_size(doc, grid_key, axes)
    base = {**RUN_DEFAULTS, **fixed}
    points = tuple(_point(doc, grid_key, base, combo) for combo in itertools.product(*axes.values()))
    return Suite(name, experiment, {axis: len(choices) for axis, choices in axes.items()}, points)


def _check_size(doc: _Doc, grid_key: yaml.Node, axes: dict[str, list[dict]]) -> None:
    """Counted before the points are made: a grid of millions would fill the memory long before it ran."""
    count = math.prod(map(len, axes.values()))
    if count > MAX_POINTS:
        sizes = " × ".join(f"{axis} {len(choices)}" for axis, choices in axes.items())
        raise doc.error(grid_key, "grid", f"{count:,} points ({sizes}), over the {MAX_POINTS:,} a suite may have: "
                                          f"split it into several suites or shorten its axes")


def _suite_name(doc: _Doc, top: dict, default: str) -> str:
    node = top["name"][1] if "name" in top else doc.root
    name = str(doc.value(node)) if "name" in top else default
    if not re.fullmatch(r"[\w.-]+", name):
        raise doc.error(node, "name", f"{name!r}: use letters, digits, _ . - (it becomes an MLflow tag and experiment)")
    return name


def _axes(doc: _Doc, grid_node: yaml.Node, fixed: dict) -> dict[str, list[dict]]:
    """Each axis as its list of choices; a choice is the settings it sets (one, or a bundle)."""
    axes: dict[str, list[dict]] = {}
    set_by: dict[str, str] = {key: "settings" for key in fixed}
    pairs = doc.mapping(grid_node, "grid")
    if not pairs:
        raise doc.error(grid_node, "grid", "empty: a suite needs at least one axis, e.g. arch: [resnet-20]")
    for axis, (key_node, values_node) in pairs.items():
        nodes = doc.sequence(values_node, axis)
        choices = [_choice(doc, axis, node) for node in nodes]
        _refuse_repeated(doc, axis, nodes, choices)
        for key in dict.fromkeys(k for choice in choices for k in choice):
            if key in set_by:
                raise doc.error(key_node, axis, f"sets {key}, which {set_by[key]} sets already")
            set_by[key] = f"axis {axis}"
        axes[axis] = choices
    return axes


def _refuse_repeated(doc: _Doc, axis: str, nodes: list[yaml.Node], choices: list[dict]) -> None:
    """A value given twice on one axis would train the same point twice, as two runs: refused, not folded, since
    it is most likely a typo for another value."""
    first_line: dict[str, int] = {}
    for node, choice in zip(nodes, choices):
        shown = " ".join(f"{key}={_show(choice[key])}" for key in sorted(choice))
        if shown in first_line:
            value = _show(choice[axis]) if list(choice) == [axis] else shown
            raise doc.error(node, axis, f"{value} given twice (first on line {first_line[shown]}): the two points "
                                        f"would be the same training")
        first_line[shown] = node.start_mark.line + 1


def _repeats(doc: _Doc, node: yaml.Node, fixed: dict, axes: dict[str, list[dict]]) -> list[dict]:
    """``repeat: N`` as an axis of N seeds from the suite's seed on; that seed leaves ``fixed`` for the axis."""
    count = doc.value(node)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise doc.error(node, "repeat", f"{count!r} is not a number of repeats (an integer >= 1)")
    if any("seed" in choice for choices in axes.values() for choice in choices):
        raise doc.error(node, "repeat", "the grid sets seed already: give the seeds there, or repeat, not both")
    first = fixed.pop("seed", DEFAULTS.data.seed)
    return [{"seed": first + i} for i in range(count)]


def _choice(doc: _Doc, axis: str, node: yaml.Node) -> dict:
    if axis in _setting_names():
        return {axis: _setting(doc, axis, node)}
    if not isinstance(node, yaml.MappingNode):
        raise doc.error(node, axis, f"unknown setting{_did_you_mean(axis, _setting_names())}; an axis is a "
                                    f"setting with a list of values, or any name with a list of mappings of settings")
    return _settings(doc, node, axis)


def _settings(doc: _Doc, node: yaml.Node, where: str) -> dict:
    settings = {}
    for key, (key_node, value_node) in doc.mapping(node, where).items():
        if key in SUITE_SETS:
            raise doc.error(key_node, str(key), "set by the suite itself for each point, not in a suite file")
        if key not in _setting_names():
            raise doc.error(key_node, str(key), f"unknown setting{_did_you_mean(key, _setting_names())} "
                                                f"(settings are the launchers' flags, with _ for -)")
        settings[key] = _setting(doc, key, value_node)
    return settings


def _setting(doc: _Doc, key: str, node: yaml.Node):
    """One setting's value, checked alone: its flag parses, an arch exists, a recipe is known."""
    value = doc.value(node)
    try:
        if key in RUN_DEFAULTS:
            _check_run_setting(key, value)
        else:
            _parse(_distributed_parser(), _flags(key, value))
        if key == "arch":
            resolve_model(str(value))
        if key == "recipe":
            config_from_args(argparse.Namespace(recipe=value))
    except UsageError as err:
        raise doc.error(node, key, str(err)) from None
    return value


def _check_run_setting(key: str, value) -> None:
    if key == "launcher" and value not in LAUNCHERS:
        raise UsageError(f"{value!r} is not a launcher; choose from {', '.join(LAUNCHERS)}")
    if key == "world_size" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"{value!r} is not a number of processes (an integer >= 1)")


def _point(doc: _Doc, grid_key: yaml.Node, base: dict, combo: tuple[dict, ...]) -> Point:
    varied = tuple(key for choice in combo for key in choice)
    point = Point({**base, **{k: v for choice in combo for k, v in choice.items()}}, varied)
    try:
        _check_point(point)
    except UsageError as err:
        raise doc.error(grid_key, "grid", f"point {point.label}: {err}") from None
    return point


def _check_point(point: Point) -> None:
    """The whole point, as its launcher will read it: cross-setting rules (milestones within epochs, ...)."""
    launcher, world = point.settings["launcher"], point.settings["world_size"]
    if launcher == "single" and world != 1:
        raise UsageError(f"launcher single runs 1 process, not world_size {world}; use ddp or horovod")
    config_from_args(_parse(_launcher_parser(launcher), engine_flags(point.settings)))


# ---- from settings to flags and commands ----

class _RefusingParser(argparse.ArgumentParser):
    """A launcher's flags, with errors raised as UsageError (for the file's line) instead of exiting."""

    def error(self, message: str):
        raise UsageError(message)


@functools.cache
def _launcher_parser(launcher: str) -> argparse.ArgumentParser:
    base = training_parser("suite", "") if launcher == "single" else distributed_parser("suite", "")[0]
    return _RefusingParser(parents=[base], add_help=False)


def _distributed_parser() -> argparse.ArgumentParser:
    """The multi-process launchers' flags: every setting a suite may give (single takes fewer)."""
    return _launcher_parser("ddp")


@functools.cache
def _setting_names() -> frozenset[str]:
    engine = {action.dest for action in _distributed_parser()._actions} - SUITE_SETS
    return frozenset(engine | set(RUN_DEFAULTS))


def _did_you_mean(name, known) -> str:
    close = difflib.get_close_matches(str(name), sorted(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _parse(parser: argparse.ArgumentParser, flags: list[str]) -> argparse.Namespace:
    """Parse ``flags`` as the launcher would, raising UsageError where the launcher would exit."""
    namespace, extra = parser.parse_known_args(flags)
    if extra:
        raise UsageError(f"the launcher does not take {' '.join(extra)}")
    return namespace


def engine_flags(settings: dict) -> list[str]:
    """The launcher flags of ``settings`` (launcher and world_size left out): ``batch_size: 64`` -> --batch-size 64."""
    flags = []
    for key, value in settings.items():
        if key not in RUN_DEFAULTS:
            flags += _flags(key, value)
    return flags


def _flags(key: str, value) -> list[str]:
    action = {a.dest: a for a in _distributed_parser()._actions}[key]
    option = action.option_strings[0]
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise UsageError(f"{value!r} is not true or false")
        return [option] if value else []
    if value is None or isinstance(value, dict):
        raise UsageError(f"{value!r} is not a value for {option}")
    if action.nargs == "+":
        return [option, *map(str, value if isinstance(value, list) else [value])]
    if isinstance(value, list):
        raise UsageError(f"{option} takes one value, not a list")
    return [option, str(value)]


def point_command(point: Point, suite: Suite, uri: str | None) -> list[str]:
    """The argument list that runs ``point`` through its launcher (never a shell string)."""
    launcher, world = point.settings["launcher"], point.settings["world_size"]
    flags = [*engine_flags(point.settings), "--experiment", suite.experiment,
             "--run-name", suite.run_names[point.key],
             "--tag", f"{SUITE_TAG}={suite.name}", "--tag", f"{POINT_TAG}={point.key}"]
    if uri is not None:
        flags += ["--tracking-uri", uri]
    script = str(LAUNCHER_DIR / f"{launcher}.py")
    if launcher == "ddp":
        return [_tool("torchrun"), "--standalone", f"--nproc_per_node={world}", script, *flags]
    if launcher == "horovod":
        return [_tool("horovodrun"), "-np", str(world), sys.executable, script, *flags]
    return [sys.executable, script, *flags]


def print_commands(commands: list[list[str]]) -> None:
    """One shell-quoted command per line; a reader that stops early (``| head``) ends the output quietly."""
    try:
        for command in commands:
            print(shlex.join(command))
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: no error at exit


def _tool(name: str) -> str:
    """``name`` from this Python's environment, else from PATH, else the bare name (for plans run elsewhere)."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name) or name


# ---- running ----

@dataclass
class Outcome:
    point: Point
    code: int
    seconds: float
    log: Path
    last_line: str


def run_suite(suite: Suite, args: argparse.Namespace) -> int:
    uri = tracking_uri(args.tracking_uri)
    log_dir = Path(args.log_dir or Path(LOG_ROOT) / suite.name)
    if not args.dry_run:
        writable_folder(log_dir, "--log-dir")
    finished = finished_points(suite, uri)
    todo = [p for p in suite.points if p.key not in finished]
    print(f"suite {suite.name}: {suite.size}; {len(suite.points) - len(todo)} already finished, "
          f"{len(todo)} to run (MLflow {uri}, experiment {suite.experiment})", file=sys.stderr)
    if args.dry_run:
        print_commands([point_command(p, suite, args.tracking_uri) for p in todo])
        return 0
    _check_tools(todo, suite)
    started = time.perf_counter()
    try:
        outcomes = _run_points(suite, todo, args.tracking_uri, log_dir)
    except KeyboardInterrupt:
        print(f"suite {suite.name} stopped; the same command continues with the points left", file=sys.stderr)
        raise
    done = finished_points(suite, uri)
    print(_summary(suite, outcomes, done, time.perf_counter() - started, uri), file=sys.stderr)
    return 0 if all(p.key in done for p in suite.points) else 1


def finished_points(suite: Suite, uri: str) -> set[str]:
    """Keys of the suite's points that have a FINISHED run in the store (a tag written before keys held the seed
    reads as the default seed's)."""
    client = open_store(uri)
    experiment = client.get_experiment_by_name(suite.experiment)
    if experiment is None:
        return set()
    runs = search_all_runs(client, experiment.experiment_id,
                           f"tags.`{SUITE_TAG}` = '{suite.name}' AND attributes.status = 'FINISHED'")
    return {point_key(json.loads(run.data.tags[POINT_TAG])) for run in runs if POINT_TAG in run.data.tags}


def _check_tools(points: list[Point], suite: Suite) -> None:
    for point in points:
        exe = point_command(point, suite, None)[0]
        if shutil.which(exe) is None:
            raise UsageError(f"{exe} not found, and point {point.label} needs it "
                             f"(launcher {point.settings['launcher']})")


def _run_points(suite: Suite, todo: list[Point], uri: str | None, log_dir: Path) -> list[Outcome]:
    """Run each point in turn; a bar over the points names the current one, a line reports each as it ends."""
    index = {p.key: i for i, p in enumerate(suite.points, 1)}
    outcomes = []
    with tqdm(total=len(todo), unit="point", disable=None, dynamic_ncols=True, file=sys.stderr) as bar:
        for n, point in enumerate(todo, 1):
            name = suite.run_names[point.key]  # as the MLflow UI will show it
            bar.set_description_str(name)
            if bar.disable:
                print(f"[{n}/{len(todo)}] {name} ...", file=sys.stderr, flush=True)
            log = log_dir / f"point-{index[point.key]:04d}.log"
            outcome = _run_point(point, point_command(point, suite, uri), log)
            outcomes.append(outcome)
            result = "ok" if outcome.code == 0 else f"FAILED (exit {outcome.code}): {outcome.last_line} [log: {log}]"
            tqdm.write(f"[{n}/{len(todo)}] {name}: {result} ({outcome.seconds:.0f} s)", file=sys.stderr)
            bar.update()
    return outcomes


def _run_point(point: Point, command: list[str], log: Path) -> Outcome:
    """One job, its output in ``log``; interrupted, it stops the job (which closes its run KILLED) and re-raises."""
    started = time.perf_counter()
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        job = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            code = job.wait()
        except KeyboardInterrupt:
            _stop(job)
            raise
    return Outcome(point, code, time.perf_counter() - started, log, _last_line(log))


def _stop(job: subprocess.Popen) -> None:
    job.terminate()
    try:
        job.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _summary(suite: Suite, outcomes: list[Outcome], done: set[str], seconds: float, uri: str) -> str:
    failed = [o for o in outcomes if o.code != 0]
    have = sum(p.key in done for p in suite.points)
    lines = [f"\nsuite {suite.name}: ran {len(outcomes)} point(s) in {seconds:.0f} s, {len(failed)} failed; "
             f"{have} of {len(suite.points)} points now have a FINISHED run"]
    lines += [f"  failed: {suite.run_names[o.point.key]} (exit {o.code}): {o.last_line}  [log: {o.log}]"
              for o in failed]
    if have < len(suite.points):
        lines.append("  run the same command again to retry the points without a FINISHED run")
    lines.append(f"  report: cnnbench report KIND --experiment {suite.experiment} --tracking-uri {uri} --out DIR")
    return "\n".join(lines)
