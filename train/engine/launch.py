"""What launchers share around the engine: config from flags, logging, signals, the end-of-run summary,
and the rule that bad input ends in one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from train.engine import loop
from train.engine.checkpoint import find_checkpoint, load_checkpoint
from train.engine.config import LR_SCALINGS, OneLineErrorParser, TrainConfig, config_from_args, get_args_parser, pos_int
from train.engine.distributed import launched_rank, launched_world_size, let_rank0_report_first
from train.engine.measure import format_pct, format_spread
from train.engine.schema import TRAIN_IMAGES_PER_SEC, VAL_ERROR
from train.engine.signals import raise_on_sigterm
from train.errors import RankError, RunFault, Terminated, UsageError

log = logging.getLogger("cnnbench")


def exit_on_usage_error(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its code; a ``UsageError`` becomes one stderr line and exit code 2.

    In a multi-process job every rank exits 2, but only rank 0 prints, unless the error is a ``RankError``
    (one rank's own problem), which the rank that met it reports under its number.
    """
    try:
        code = main()
    except UsageError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "bad input"
        rank = launched_rank()
        if rank == 0 or isinstance(err, RankError):
            where = f" (rank {rank})" if rank else ""
            print(f"cnnbench: error{where}: {first_line}", file=sys.stderr)
        else:
            let_rank0_report_first()
        code = 2
    except RunFault as fault:  # every rank meets it together; the run is already closed FAILED
        if launched_rank() == 0:
            print(f"cnnbench: training stopped: {fault}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"cnnbench: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        code = 143 if terminated else 130
    sys.exit(code)


def training_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A launcher's parser: the engine's flags plus ``--help``; launchers add their own flags to it."""
    return OneLineErrorParser(prog=prog, description=description, parents=[get_args_parser()],
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def distributed_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A multi-process launcher's parser: the engine's flags and the batch and lr rules of data parallelism."""
    parser = training_parser(prog, description)
    group = parser.add_argument_group("distributed")
    group.add_argument("--global-batch-size", type=pos_int,
                       help="instead of --batch-size: the job's batch, split evenly over the processes")
    group.add_argument("--lr-scaling", choices=LR_SCALINGS,
                       help="linear: --lr is for one process's batch and is multiplied by the number of "
                            "processes (Goyal et al. 2017) (default: none)")
    return parser, group


def split_global_batch(args: argparse.Namespace) -> None:
    """Turn --global-batch-size into the per-process --batch-size the engine takes."""
    total = getattr(args, "global_batch_size", None)
    if total is None:
        return
    world = launched_world_size()
    if hasattr(args, "batch_size"):
        raise UsageError("give --batch-size (per process) or --global-batch-size, not both")
    if total % world:
        raise UsageError(f"--global-batch-size {total} cannot be split evenly over {world} processes")
    args.batch_size = total // world


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, dict | None]:
    """The run's config and, with --resume, the checkpoint payload it continues from (read once)."""
    resume = getattr(args, "resume", None)
    if resume is None:
        return config_from_args(args), None
    payload = load_checkpoint(find_checkpoint(resume))
    return config_from_args(args, saved=payload["config"]), payload


def setup_logging(is_main: bool) -> None:
    """Rank 0 logs to stderr; other ranks get a logger with no output."""
    log.handlers.clear()
    log.propagate = False
    if is_main:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        log.addHandler(logging.NullHandler())


def train_and_report(cfg: TrainConfig, dist, checkpoint: dict | None, run_id: str | None = None) -> int:
    """Run the engine (``run_id``: reopen that run, see ``loop.run``); on rank 0 print the summary table and how to
    look at the run."""
    setup_logging(dist.ctx.is_main)
    raise_on_sigterm()
    summary = loop.run(cfg, dist, checkpoint, run_id)
    if dist.ctx.is_main:
        print(format_summary(cfg, summary))
    return 0


def format_summary(cfg: TrainConfig, s) -> str:
    m = s.metrics
    rows = [
        ("run", f"{s.run_id} ({s.status})"),
        ("arch / dataset", f"{cfg.arch} / {cfg.data.dataset}"),
        ("epochs", f"{s.epochs_done} of {cfg.epochs} planned" if s.epochs_done < cfg.epochs else str(cfg.epochs)),
        ("val top-1 error", f"{m[VAL_ERROR]:.2f} % after the last epoch (best epoch {m['best_val_top1_err']:.2f} %)"),
        ("val top-5 error", f"{m['final_val_top5_err']:.2f} % after the last epoch"),
        ("train images/s", f"{m[TRAIN_IMAGES_PER_SEC]:.1f} (the run's steady-state images / seconds; the last epoch's "
                           f"spread {format_spread(m['epoch_images_per_sec_spread'])}, "
                           f"data wait {format_pct(100 * m['data_wait_frac'])})"),
        ("parameters", f"{m['num_params'] / 1e6:.3f} M"),
        ("forward FLOPs/image", f"{m['flops_per_image'] / 1e6:.1f} M"),
        ("peak memory", f"{m['peak_mem_mib']:.0f} MiB"),
        ("training time", f"{m['train_time_s']:.1f} s (the epochs' training and evaluation; start-up "
                          f"{m['startup_time_s']:.1f} s apart)"),
        *([("time to target", _time_to_target(cfg, m))] if cfg.target_top1_err is not None else []),
        ("last checkpoint", str(s.checkpoint)),
        *([("to continue", f"--resume {s.checkpoint.parent}")]
          if s.checkpoint and s.epochs_done == cfg.stop_after else []),
    ]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
    return f"\ncnnbench summary\n{table}\n\nLook at it in the MLflow UI:\n  {mlflow_ui_command(s.tracking_uri)}\n"


def _time_to_target(cfg: TrainConfig, m: dict) -> str:
    target = f"top-1 error <= {cfg.target_top1_err:g} %"
    if "time_to_target_s" not in m:
        return f"not reached ({target})"
    return (f"{m['time_to_target_s']:.1f} s from run start (MLPerf), {m['epochs_to_target']:.0f} epochs, "
            f"{m['images_to_target']:.0f} images ({target}; training alone {m['train_time_to_target_s']:.1f} s, "
            f"evaluation {m['eval_time_to_target_s']:.1f} s)")


def mlflow_ui_command(uri: str) -> str:
    """The exact command that opens this store (a relative sqlite path made absolute)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    mlflow = Path(sys.executable).with_name("mlflow")
    exe = str(mlflow) if mlflow.exists() else "mlflow"
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"{exe} ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000   # then open http://127.0.0.1:5000"
