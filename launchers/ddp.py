"""Data-parallel training under torchrun: one process per device, gradients averaged by DistributedDataParallel.

  torchrun --nproc_per_node=8 launchers/ddp.py --arch resnext50 --dataset imagenet --data-dir /data/imagenet
  torchrun --nproc_per_node=2 launchers/ddp.py --device cpu --threads 1          # gloo on CPU
  torchrun --nnodes=2 --node-rank=0 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
      launchers/ddp.py --arch resnet50 --tracking-uri http://HOST:5000          # one such line per node

Ranks come from torchrun's environment; workers restarted by torchrun (--max-restarts=N) resume the job's
run from its newest checkpoint; NCCL on CUDA devices, gloo otherwise. --batch-size is per process
(the global batch is logged); validation counts every image once across ranks; rank 0 alone writes the
MLflow run and the checkpoints. Multi-node jobs must log to a tracking server (mlflow/README.md), not to a
sqlite file on a shared file system.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed

from train.engine.checkpoint import job_checkpoint_folder
from train.engine.config import DEFAULTS
from train.engine.distributed import launched_rank, torchrun_ddp
from train.engine.launch import (
    distributed_parser,
    exit_on_usage_error,
    resolve_config,
    split_global_batch,
    train_and_report,
)


def main(argv: list[str] | None = None, prog: str = "launchers/ddp.py") -> int:
    parser, group = distributed_parser(prog, __doc__)
    group.add_argument("--backend", choices=("auto", "nccl", "gloo"),
                       help="collectives backend; auto = nccl on CUDA devices, gloo on CPU (default: auto)")
    group.add_argument("--sync-bn", action="store_true",
                       help="synchronise BatchNorm statistics across ranks (CUDA only)")
    args = parser.parse_args(argv)
    split_global_batch(args)
    resume_restarted_job(args)
    cfg, checkpoint = resolve_config(args)
    dist = torchrun_ddp(getattr(args, "backend", "auto"), cfg.device, cfg.sync_bn)
    try:
        return train_and_report(cfg, dist, checkpoint)
    finally:
        torch.distributed.destroy_process_group()


def resume_restarted_job(args) -> None:
    """Workers that torchrun restarted (--max-restarts) continue the job's run from its newest checkpoint."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    job_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if restarts == 0 or job_id is None or hasattr(args, "resume"):
        return
    folder = job_checkpoint_folder(Path(getattr(args, "checkpoint_dir", DEFAULTS.checkpoint_dir)), job_id)
    if folder is not None:
        args.resume = str(folder)
        if launched_rank() == 0:
            print(f"cnnbench: restart {restarts} of torchrun job {job_id}: resuming from {folder}", file=sys.stderr)


if __name__ == "__main__":
    exit_on_usage_error(main)
