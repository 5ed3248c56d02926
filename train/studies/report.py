"""``cnnbench report KIND --experiment NAME --out DIR``: an experiment's MLflow runs in, a Markdown report and
its PNG plots out, shaped like the published tables; the files are also logged as the artifacts of a report run.

  cnnbench report cifar --experiment cifar_table --out reports/cifar
  cnnbench report throughput --experiment throughput --out reports/throughput --tracking-uri http://127.0.0.1:5000

KIND is one of ``train.studies.reports.KINDS``; each kind's module renders the runs (``render(runs, out_dir)``).
The report run is a run of the same experiment, tagged ``cnnbench.report``, and reports leave such runs out.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
from pathlib import Path

from train.engine.config import OneLineErrorParser
from train.engine.tracking import MlflowTracker, open_store, search_all_runs, tracking_uri
from train.errors import UsageError
from train.studies.reports import KINDS

REPORT_TAG = "cnnbench.report"


def main(argv: list[str] | None = None, prog: str = "cnnbench report") -> int:
    args = _parser(prog).parse_args(argv)
    render = renderer(args.kind)
    uri = tracking_uri(args.tracking_uri)
    runs = experiment_runs(uri, args.experiment)
    with tempfile.TemporaryDirectory() as tmp:
        markdown = render(runs, Path(tmp))
        run_id = log_report(uri, args.experiment, args.kind, runs, Path(tmp))
        shutil.copytree(tmp, args.out, dirs_exist_ok=True)
    print(f"{Path(args.out) / markdown.name}: {args.kind} report over {len(runs)} runs of {args.experiment}, "
          f"plots beside it; logged as the artifacts of run {run_id}")
    return 0


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description="Turn an experiment's runs into a Markdown report with plots.")
    p.add_argument("kind", choices=KINDS, help="which report")
    p.add_argument("--experiment", required=True, help="MLflow experiment whose runs the report reads")
    p.add_argument("--out", default="reports", help="folder for the Markdown and PNGs (default: reports)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return p


def renderer(kind: str):
    """The ``render`` function of ``kind``; a module that is missing, or misses a package, is a UsageError."""
    module = f"train.studies.reports.{KINDS[kind]}"
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
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UsageError(f"no experiment {name!r} in {uri} (it has: {', '.join(names) or 'none'})")
    runs = [r for r in search_all_runs(client, experiment.experiment_id) if REPORT_TAG not in r.data.tags]
    if not runs:
        raise UsageError(f"experiment {name!r} in {uri} has no training runs to report on")
    return runs


def log_report(uri: str, experiment: str, kind: str, runs: list, folder: Path) -> str:
    """A run holding the report's files, with the ids of the runs it was made from (config.json)."""
    tracker = MlflowTracker(uri, experiment)
    config = {"report": kind, "experiment": experiment, "runs": [r.info.run_id for r in runs]}
    with tracker.run(f"report: {kind}", {}, config, {REPORT_TAG: kind}):
        tracker.client.log_artifacts(tracker.run_id, str(folder))
    return tracker.run_id
