"""Data-parallel training under horovodrun: Horovod's DistributedOptimizer averages gradients.

  horovodrun -np 2 python launchers/horovod.py --device cpu --threads 1        # gloo on CPU
  horovodrun -np 8 -H host1:4,host2:4 python launchers/horovod.py --arch resnet50 --tracking-uri http://HOST:5000

Same engine, sharding, global metrics and single MLflow run (rank 0) as launchers/ddp.py. Horovod 0.28.1
must be built for this torch first: `bash .ci/build-horovod` (about 3 minutes; with NCCL where torch is a CUDA
build: on GPUs a build without it is refused, see --allow-horovod-without-nccl). fp16 loss scaling is not
wired to Horovod's delayed gradient synchronisation: use bf16 or fp32.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

# This file shares its name with the library it launches, and Python puts the script's folder first on
# sys.path: take it off, or `import horovod` would import this file.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from train.engine.distributed import horovodrun_job, without_nccl_tags  # noqa: E402
from train.engine.launch import (  # noqa: E402
    distributed_parser,
    exit_on_usage_error,
    resolve_config,
    split_global_batch,
    train_and_report,
)
from train.errors import UsageError  # noqa: E402


def main(argv: list[str] | None = None, prog: str = "launchers/horovod.py") -> int:
    parser, group = distributed_parser(prog, __doc__)
    group.add_argument("--allow-horovod-without-nccl", action="store_true",
                       help="train on GPUs with a Horovod built without NCCL (gradients through host memory and "
                            "Gloo), tagged cnnbench.horovod; refused otherwise")
    args = parser.parse_args(argv)
    split_global_batch(args)
    cfg, checkpoint = resolve_config(args)
    if cfg.precision == "fp16":
        raise UsageError("--precision fp16 is not supported with Horovod here; use bf16 or fp32")
    job = horovodrun_job(cfg.device, getattr(args, "allow_horovod_without_nccl", False))
    tags = [f"{key}={value}" for key, value in without_nccl_tags(job.ctx).items()]
    return train_and_report(dataclasses.replace(cfg, tags=(*cfg.tags, *tags)), job, checkpoint)


if __name__ == "__main__":
    exit_on_usage_error(main)
