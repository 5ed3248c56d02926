"""Run one framework-comparison task on PyTorch, TensorFlow/Keras or MXNet and log it to MLflow.

  cnnbench framework --framework tensorflow --task vgg-cnn --data-dir data --epochs 10
  cnnbench framework --framework mxnet --task resnet50-train --batch-size 32 --data-format channels_first
  cnnbench framework --framework pytorch --task resnet50-infer --steps 20

tasks:
{tasks}

TensorFlow installs with pip install -e '.[tensorflow]'. MXNet runs in its own environment, .venv-mxnet,
which bash .ci/setup-mxnet makes. Runs go to the MLflow experiment {experiment}; their report:

  cnnbench report frameworks --experiment {experiment}
"""
from __future__ import annotations

import argparse

from train.engine.config import DEFAULTS, PRECISIONS, OneLineErrorParser, nonneg_float, nonneg_int, pos_float, pos_int
from train.engine.launch import mlflow_ui_command, setup_logging
from train.studies.figures import percent, significant
from train.studies.frameworks.contract import DATA_FORMATS, TaskOptions
from train.studies.frameworks.runner import FRAMEWORKS, FrameworkRun, make_options, run
from train.studies.frameworks.tasks import LR, MOMENTUM, NATIVE_DATA_FORMAT, TASKS
from train.studies.helptext import LaidOutHelp


def build_parser(prog: str) -> argparse.ArgumentParser:
    tasks = "\n".join(f"  {t.name:<15} {t.summary}" for t in TASKS.values())
    p = OneLineErrorParser(prog=prog, description=__doc__.format(tasks=tasks, experiment=TaskOptions.experiment),
                           formatter_class=LaidOutHelp, argument_default=argparse.SUPPRESS)
    p.add_argument("--framework", required=True, choices=FRAMEWORKS,
                   help="which library builds, trains and times the net: PyTorch, Keras on TensorFlow, or Gluon "
                        "on MXNet")
    p.add_argument("--task", required=True, choices=TASKS, help="what to run: one of the tasks above")
    p.add_argument("--data-dir", help="vgg-cnn: folder holding cifar-10-batches-py (default: data)")
    p.add_argument("--batch-size", type=pos_int, help="images per step (default: the task's)")
    p.add_argument("--epochs", type=pos_int, help="vgg-cnn: epochs (default: 10, as in the study)")
    p.add_argument("--steps", type=pos_int,
                   help=f"resnet50-*: steps on synthetic data, warm-up included "
                        f"(default: {TASKS['resnet50-train'].steps})")
    p.add_argument("--lr", type=pos_float, help=f"SGD learning rate (default: {LR})")
    p.add_argument("--momentum", type=nonneg_float, help=f"SGD momentum (default: {MOMENTUM})")
    p.add_argument("--image-size", type=pos_int, help="resnet50-*: synthetic image side (default: 224)")
    p.add_argument("--num-classes", type=pos_int, help="resnet50-train: classes of the head (default: 1000)")
    p.add_argument("--data-format", choices=DATA_FORMATS,
                   help=f"image layout (default: the framework's own: {_native_formats()})")
    p.add_argument("--precision", choices=PRECISIONS, help="fp32, or mixed precision of that type (default: fp32)")
    p.add_argument("--seed", type=nonneg_int,
                   help=f"seed of weights, data order and synthetic data (default: {DEFAULTS.data.seed})")
    p.add_argument("--threads", type=pos_int, help="CPU threads of the framework (default: its own choice)")
    p.add_argument("--warmup-steps", type=nonneg_int,
                   help=f"steps per epoch left out of images/s (default: {DEFAULTS.warmup_steps})")
    p.add_argument("--window-steps", type=pos_int,
                   help="steps per timing window (default: sized to the run, as the training engine sizes them)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", help=f"MLflow experiment (default: {TaskOptions.experiment})")
    p.add_argument("--run-name", help="MLflow run name (default: FRAMEWORK-TASK-FORMAT-bBATCH)")
    return p


def _native_formats() -> str:
    """``channels_first for pytorch and mxnet, channels_last for tensorflow``, from ``NATIVE_DATA_FORMAT``."""
    by_format: dict[str, list[str]] = {}
    for framework, data_format in NATIVE_DATA_FORMAT.items():
        by_format.setdefault(data_format, []).append(framework)
    return ", ".join(f"{data_format} for {' and '.join(names)}" for data_format, names in by_format.items())


def main(argv: list[str] | None = None, prog: str = "cnnbench framework") -> int:
    given = vars(build_parser(prog).parse_args(argv))
    opts = make_options(given.pop("framework"), given.pop("task"), **given)
    setup_logging(is_main=True)
    print(format_result(run(opts)))
    return 0


def format_result(result: FrameworkRun) -> str:
    m = result.metrics
    rows = [("run", result.run_id), ("outcome", result.outcome if result.outcome == "measured" else result.reason)]
    shown = {"train_images_per_sec": significant, "infer_images_per_sec": significant, "final_val_top1_err": percent,
             "fit_time_s": significant, "num_params": significant}
    rows += [(name, show(m[name])) for name, show in shown.items() if name in m]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
    ui = mlflow_ui_command(result.tracking_uri)
    return f"\ncnnbench framework\n{table}\n\nLook at it in the MLflow UI:\n  {ui}\n"
