"""The distribution seam: where the process sits in the job, and the collective operations it needs.

The engine talks only to a ``Distributed`` object: ``SingleProcess``, ``TorchDDP`` (torchrun) or
``Horovod`` (horovodrun). Each has ``ctx`` and the same five methods; the engine never imports
torch.distributed or horovod itself.
"""
from __future__ import annotations

import datetime
import os
import signal
import time

import torch

from train.context import DistContext
from train.errors import RankError, UsageError

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_rank() -> int:
    """This process's rank as its launcher (torchrun or horovodrun) set it, before any library starts: 0 alone."""
    return int(os.environ.get("RANK", os.environ.get("HOROVOD_RANK", "0")))


def let_rank0_report_first(grace_s: float = 10.0) -> None:
    """A rank that stays silent about an error all ranks share waits before exiting: exiting first would
    make torchrun kill rank 0 before it has printed the error."""
    if launched_rank() != 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # torchrun's SIGTERM then ends the wait quietly
        time.sleep(grace_s)


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", os.environ.get("HOROVOD_SIZE", "1")))


class SingleProcess:
    """One process, one device: every collective is the identity (also the base of the real ones)."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass


def gather_per_rank(dist, values) -> list[list[float]]:
    """Every rank's ``values``, one row per rank in rank order, through the seam's one collective: each rank
    fills its own row of a zero matrix and the rows are summed (the seam needs no gather, min or max)."""
    ctx = dist.ctx
    rows = torch.zeros(ctx.world_size, len(values), dtype=torch.float64, device=ctx.device)
    rows[ctx.rank] = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=ctx.device) for v in values])
    return dist.all_reduce_sum(rows).tolist()


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` means the GPU of this local rank when CUDA is there, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: this machine has no usable CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise RankError(f"--device cuda: no CUDA device for local rank {local_rank} "
                            f"({torch.cuda.device_count()} visible on this machine)")
        return torch.device("cuda", local_rank)
    return torch.device(requested)


class TorchDDP(SingleProcess):
    """torch.distributed under torchrun: DistributedDataParallel for gradients, the process group for sums."""

    def __init__(self, ctx: DistContext, sync_bn: bool = False):
        super().__init__(ctx)
        self.sync_bn = sync_bn

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if self.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the children in place
        device_ids = [self.ctx.device] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """DDP broadcasts parameters and buffers when it wraps; a resumed optimizer is the same file on every rank."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        torch.distributed.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        torch.distributed.barrier()


def torchrun_ddp(backend: str, device: str, sync_bn: bool, timeout_s: float = 1800) -> TorchDDP:
    """Join the process group described by torchrun's environment (NCCL on CUDA, gloo on CPU by default)."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise UsageError(f"not started by torchrun ({', '.join(missing)} unset): run "
                         f"`torchrun --nproc_per_node=N launchers/ddp.py ...`, or launchers/single.py for one process")
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    dev = pick_device(device, local_rank)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise UsageError("--backend nccl needs CUDA devices; use --backend gloo on CPU")
    if sync_bn and dev.type != "cuda":
        raise UsageError("--sync-bn needs CUDA devices: torch's SyncBatchNorm runs on GPU only")
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                         device_id=dev if dev.type == "cuda" else None)
    ctx = DistContext(rank, local_rank, world, dev, backend, "ddp", os.environ.get("TORCHELASTIC_RUN_ID"))
    return TorchDDP(ctx, sync_bn)


class Horovod(SingleProcess):
    """Horovod under horovodrun: its DistributedOptimizer averages gradients, its allreduce sums metrics."""

    def __init__(self, ctx: DistContext, hvd):
        super().__init__(ctx)
        self.hvd = hvd

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return self.hvd.DistributedOptimizer(optimizer, op=self.hvd.Average)

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        if optimizer.state:  # resumed; an empty state Horovod would fill by a zero-gradient step, which
            self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)  # weight decay makes a real update

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(tensor, op=self.hvd.Sum)

    def barrier(self) -> None:
        self.hvd.barrier()


def horovodrun_job(device: str) -> Horovod:
    """Initialise Horovod; ranks come from horovodrun's environment through ``hvd.rank()`` and friends."""
    try:
        import horovod.torch as hvd
    except ImportError as err:
        raise UsageError(f"Horovod is not installed for torch ({err}): build it with `bash .ci/build-horovod` "
                         f"(Horovod 0.28.1 from source, Gloo, about 3 minutes)") from None
    hvd.init()
    dev = pick_device(device, hvd.local_rank())
    backend = "nccl" if dev.type == "cuda" and hvd.nccl_built() else "gloo"
    return Horovod(DistContext(hvd.rank(), hvd.local_rank(), hvd.size(), dev, backend, "horovod"), hvd)
