"""The ``cnnbench`` console command: one entry point for the engine's tools and the studies built on it.

Each subcommand is a module with ``main(argv, prog) -> int``, imported only when asked for, so that
``cnnbench models`` does not pay for what ``cnnbench report`` needs.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "models": ("train.models.__main__", "list the model registry with parameters and sources"),
    "sync": ("train.engine.sync", "replay MLflow writes a run kept while its tracking server was away"),
    "framework": ("train.studies.frameworks.cli", "one comparison task (vgg-cnn, resnet50-train/-infer) on PyTorch, "
                                          "TensorFlow/Keras or MXNet"),
    "suite": ("train.studies.suite", "run a benchmark grid from configs/*.yaml, one MLflow run per point (or plan it)"),
    "report": ("train.studies.report", "an experiment's runs as a Markdown report with plots, like the published tables"),
    "analyze": ("train.studies.analyze", "ImageNet nets' parameters, FLOPs, memory, latency and images/s on this device, "
                                 "with plots"),
    "evaluate": ("train.studies.evaluate", "Acc@1/Acc@5 of pretrained (or given) weights over a validation folder, ranked"),
}


def main(argv: list[str] | None = None) -> None:
    """``cnnbench COMMAND [flags]``: one entry point for the commands in ``COMMANDS``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        listing = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
        stream = sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr
        print(f"usage: cnnbench COMMAND [flags]   (cnnbench COMMAND --help)\n\ncommands:\n{listing}", file=stream)
        sys.exit(0 if stream is sys.stdout else 2)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    from train.engine.launch import exit_on_usage_error

    exit_on_usage_error(lambda: module.main(argv[1:], prog=f"cnnbench {argv[0]}"))
