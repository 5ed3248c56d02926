"""An experiment's MLflow runs in, a Markdown report (KIND.md) and its PNG plots out, shaped like the published
tables; the files are also logged as the artifacts of a report run in the same experiment.

  cnnbench report cifar --experiment cifar_table --out reports/cifar
  cnnbench report throughput --experiment throughput --tracking-uri http://127.0.0.1:5000

Report runs are tagged cnnbench.report (so are the runs of cnnbench compare), and no report reads them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import tempfile
from pathlib import Path

from train.engine.config import OneLineErrorParser
from train.engine.tracking import MlflowTracker, open_store, search_all_runs, tracking_uri
from train.errors import UsageError
from train.studies.helptext import LaidOutHelp
from train.studies.reports import KINDS

REPORT_TAG = "cnnbench.report"
OUT = "reports"  # where the studies write their files unless told: .gitignore keeps it out of git


def main(argv: list[str] | None = None, prog: str = "cnnbench report") -> int:
    args = _parser(prog).parse_args(argv)
    render = renderer(args.kind)
    uri = tracking_uri(args.tracking_uri)
    runs = experiment_runs(uri, args.experiment)
    writable_folder(args.out, "--out")
    with tempfile.TemporaryDirectory() as tmp:
        markdown = render(runs, Path(tmp))
        run_id = log_report(uri, args.experiment, args.kind, runs, Path(tmp))
        shutil.copytree(tmp, args.out, dirs_exist_ok=True)
    print(f"{Path(args.out) / markdown.name}: {args.kind} report over {len(runs)} runs of {args.experiment}, "
          f"plots beside it; logged as the artifacts of run {run_id}")
    return 0


def _parser(prog: str) -> argparse.ArgumentParser:
    width = max(map(len, KINDS))
    kinds = "\n".join(f"  {kind:<{width}}  {reads}" for kind, reads in KINDS.items())
    p = OneLineErrorParser(prog=prog, description=f"{__doc__}\nKINDS, and the runs each reads:\n{kinds}",
                           formatter_class=LaidOutHelp)
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=f"which report: {', '.join(KINDS)}")
    p.add_argument("--experiment", required=True, help="MLflow experiment whose runs the report reads")
    p.add_argument("--out", default=OUT, help=f"folder for the Markdown and PNGs (default: {OUT}, which git ignores)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return p


def renderer(kind: str):
    """The ``render`` function of ``kind``; a module that is missing, or misses a package, is a UsageError."""
    module = f"train.studies.reports.{kind}"
    try:
        return importlib.import_module(module).render
    except ModuleNotFoundError as err:
        if err.name == module:
            raise UsageError(f"report kind {kind!r} is not available in this installation (no module {module})") \
                from None
        raise UsageError(f"report kind {kind!r} needs the Python package {err.name!r}, which is not installed") \
            from None


def experiment_runs(uri: str, name: str) -> list:
    """Every training run of experiment ``name`` (any status), report runs left out."""
    client = open_store(uri)
    experiment = existing_experiment(client, uri, name)
    runs = [r for r in search_all_runs(client, experiment.experiment_id) if REPORT_TAG not in r.data.tags]
    if not runs:
        raise UsageError(f"experiment {name!r} in {uri} has no training runs to report on")
    return runs


def existing_experiment(client, uri: str, name: str):
    """Experiment ``name`` of the store; a name it lacks is a UsageError listing those it has."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UsageError(f"no experiment {name!r} in {uri} (it has: {', '.join(names) or 'none'})")
    return experiment


def writable_folder(path: str | Path, flag: str) -> Path:
    """``path`` made (with its parents) and written to once, so that a file in its way or a folder without write
    permission is one line before any work is done or any run logged, not a traceback after."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder: give a folder for the output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cnnbench-write-test"):
            return folder
    except OSError as err:
        raise UsageError(f"{flag} {path} cannot be written: {err.strerror or err}") from None


def log_report(uri: str, experiment: str, kind: str, runs: list, folder: Path) -> str:
    """A run holding the report's files, with the ids of the runs it was made from (config.json)."""
    tracker = MlflowTracker(uri, experiment)
    config = {"report": kind, "experiment": experiment, "runs": [r.info.run_id for r in runs]}
    with tracker.run(f"report: {kind}", {}, config, {REPORT_TAG: kind}) as end:
        tracker.client.log_artifacts(tracker.run_id, str(folder))
        end.reason = f"{kind} of {len(runs)} runs logged as artifacts ({', '.join(sorted(os.listdir(folder)))})"
    return tracker.run_id
