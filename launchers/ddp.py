"""Data-parallel training under torchrun: one process per device, gradients averaged by DistributedDataParallel.

  torchrun --nproc_per_node=8 launchers/ddp.py --arch resnext50 --dataset imagenet --data-dir /data/imagenet
  torchrun --nproc_per_node=2 launchers/ddp.py --device cpu --threads 1          # gloo on CPU
  torchrun --nnodes=2 --node-rank=0 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
      launchers/ddp.py --arch resnet50 --tracking-uri http://HOST:5000          # one such line per node

Ranks come from torchrun's environment; workers restarted by torchrun (--max-restarts=N) continue the job's
run from its newest checkpoint (from epoch 1 if killed before the first); NCCL on CUDA devices, gloo
otherwise. --batch-size is per process (the global batch is logged); validation counts every image once
across ranks; rank 0 alone writes the MLflow run and the checkpoints. Multi-node jobs must log to a tracking
server (mlflow/README.md), not to a sqlite file on a shared file system.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed

from train.engine.checkpoint import has_checkpoint, job_run
from train.engine.config import DEFAULTS, pos_float
from train.engine.distributed import CONNECT_TIMEOUT_S, launched_rank, torchrun_ddp
from train.engine.launch import (
    distributed_parser,
    exit_on_usage_error,
    resolve_config,
    split_global_batch,
    train_and_report,
)


def main(argv: list[str] | None = None, prog: str = "launchers/ddp.py") -> int:
    parser, group = distributed_parser(prog, __doc__)
    group.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto",
                       help="collectives backend; auto = nccl on CUDA devices, gloo on CPU (default: auto)")
    group.add_argument("--sync-bn", action="store_true",
                       help="synchronise BatchNorm statistics across ranks (CUDA only)")
    group.add_argument("--connect-timeout-s", type=pos_float, default=CONNECT_TIMEOUT_S,
                       help=f"a rank that cannot join the others within this many seconds stops with the reason "
                            f"(default: {CONNECT_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    split_global_batch(args)
    run_id = restarted_jobs_run(args)
    cfg, checkpoint = resolve_config(args)
    dist = torchrun_ddp(getattr(args, "backend", "auto"), cfg.device, cfg.sync_bn, args.connect_timeout_s)
    try:
        return train_and_report(cfg, dist, checkpoint, run_id)
    finally:
        torch.distributed.destroy_process_group()


def restarted_jobs_run(args) -> str | None:
    """Workers that torchrun restarted (--max-restarts) continue the job's run: from its newest checkpoint, or from
    epoch 1 when the job was killed before its first. The run's id, or None for a job's first workers."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    job_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if restarts == 0 or job_id is None or hasattr(args, "resume"):
        return None
    root = Path(getattr(args, "checkpoint_dir", DEFAULTS.checkpoint_dir))
    run_id = job_run(root, job_id)
    if run_id is None:  # killed before rank 0 opened a run: there is none to continue
        return None
    if has_checkpoint(root / run_id):
        args.resume = str(root / run_id)
    if launched_rank() == 0:
        how = f"resuming from {args.resume}" if hasattr(args, "resume") else "no checkpoint yet: from epoch 1"
        print(f"cnnbench: restart {restarts} of torchrun job {job_id}: run {run_id}, {how}", file=sys.stderr)
    return run_id


if __name__ == "__main__":
    exit_on_usage_error(main)
