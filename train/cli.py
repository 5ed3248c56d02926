"""The ``cnnbench`` console command: one entry point for the engine's tools and the studies built on it.

Each subcommand is a module with ``main(argv, prog) -> int``, imported only when asked for, so that
``cnnbench models`` does not pay for what ``cnnbench report`` needs.
"""
from __future__ import annotations

import difflib
import importlib
import sys

COMMANDS = {
    "models": ("train.models.__main__", "list the model registry: source, input size, parameters, GFLOPs, GMACs"),
    "sync": ("train.engine.sync", "replay MLflow writes a run kept while its tracking server was away"),
    "framework": ("train.studies.frameworks.cli", "one comparison task (vgg-cnn, resnet50-train/-infer) on PyTorch, "
                                          "TensorFlow/Keras or MXNet"),
    "suite": ("train.studies.suite", "run a benchmark grid from configs/*.yaml, one MLflow run per point (or plan it)"),
    "report": ("train.studies.report", "an experiment's runs as a Markdown report with plots, like the published tables"),
    "compare": ("train.studies.compare", "two sets of runs side by side: medians, 95 % intervals, B / A, significant "
                                         "or not"),
    "diagnose": ("train.studies.diagnose", "why a training configuration is slow: loader alone, step alone, real "
                                           "run; input-, compute- or communication-bound"),
    "scaling": ("train.studies.scaling", "the job's images/s and efficiency at several world sizes (DDP or "
                                         "Horovod), with intervals and where the time went"),
    "analyze": ("train.studies.analyze", "ImageNet nets' parameters, FLOPs and MACs, memory, latency and images/s on "
                                         "this device, with plots"),
    "evaluate": ("train.studies.evaluate", "Acc@1/Acc@5 of pretrained (or given) weights over a validation folder, ranked"),
}


USAGE = "usage: cnnbench COMMAND [flags]   (cnnbench COMMAND --help)"


def main(argv: list[str] | None = None) -> None:
    """``cnnbench COMMAND [flags]``: one entry point for the commands in ``COMMANDS``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\ncommands:\n{_listing()}")
        sys.exit(0)
    if not argv:
        print(f"{USAGE}\n\ncommands:\n{_listing()}", file=sys.stderr)
        sys.exit(2)
    if argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"cnnbench: error: unknown command {argv[0]!r}{hint}; the commands are: {', '.join(COMMANDS)}",
              file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    from train.engine.launch import exit_on_usage_error

    exit_on_usage_error(lambda: module.main(argv[1:], prog=f"cnnbench {argv[0]}"))


def _listing() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
