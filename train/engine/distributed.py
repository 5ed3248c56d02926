"""The distribution seam: where the process sits in the job, and the collective operations it needs.

The engine talks only to a ``Distributed`` object: ``SingleProcess``, ``TorchDDP`` (torchrun) or
``Horovod`` (horovodrun). Each has ``ctx`` and the same six methods; the engine never imports
torch.distributed or horovod itself.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import sys
import tempfile
import time

import torch

from train.context import DistContext
from train.errors import RankError, UsageError

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_rank() -> int:
    """This process's rank as its launcher (torchrun or horovodrun) set it, before any library starts: 0 alone."""
    return int(os.environ.get("RANK", os.environ.get("HOROVOD_RANK", "0")))


def let_rank0_report_first(grace_s: float = 60.0) -> None:
    """A rank that stays silent about an error all ranks share waits before exiting: exiting first would
    make torchrun kill rank 0 before it has printed the error and closed the run (seconds on a busy machine).
    Rank 0's exit ends the wait: torchrun then stops the others."""
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

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: ranks evaluate the model rank 0
        checkpoints, not each its own statistics."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass

    def tell_peers(self, problem: str) -> None:
        """Bad input this rank met alone (an unreadable image in its shard): leave it where the other ranks find it
        (``peers_problem``) once a collective tells them, or breaks off because this rank left."""

    def peers_problem(self) -> str | None:
        """The problem another rank told (``tell_peers``), as ``rank N: ...``; None when none did."""
        return None


def gather_per_rank(dist, values) -> list[list[float]]:
    """Every rank's ``values``, one row per rank in rank order, through the seam's one collective: each rank
    fills its own row of a zero matrix and the rows are summed (the seam needs no gather, min or max)."""
    ctx = dist.ctx
    rows = torch.zeros(ctx.world_size, len(values), dtype=torch.float64, device=ctx.device)
    rows[ctx.rank] = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=ctx.device) for v in values])
    return dist.all_reduce_sum(rows).tolist()


def gather_hostnames(dist, width: int = 64) -> list[str]:
    """Every rank's host name (its first ``width`` bytes), in rank order, through ``gather_per_rank``."""
    name = socket.gethostname().encode()[:width].ljust(width, b"\0")
    return [bytes(int(c) for c in row).rstrip(b"\0").decode(errors="replace") for row in gather_per_rank(dist, name)]


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

    def __init__(self, ctx: DistContext, sync_bn: bool = False, store: torch.distributed.Store | None = None):
        super().__init__(ctx)
        self.sync_bn = sync_bn
        self.store = store  # the job's key-value store, served by torchrun's agent: it outlives every worker

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if self.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the children in place
        device_ids = [self.ctx.device] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """DDP broadcasts parameters and buffers when it wraps; a resumed optimizer is the same file on every rank."""

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        # DDP broadcasts rank 0's buffers at the start of each training forward, then every rank updates its own
        # copy: after an epoch they differ. Doing here what the next forward would do changes no training step.
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        torch.distributed.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        torch.distributed.barrier()

    def tell_peers(self, problem: str) -> None:
        self.store.set(_problem_key(self.ctx.rank), problem)

    def peers_problem(self) -> str | None:
        told = [r for r in range(self.ctx.world_size) if r != self.ctx.rank and self.store.check([_problem_key(r)])]
        return f"rank {told[0]}: {self.store.get(_problem_key(told[0])).decode()}" if told else None


def _problem_key(rank: int) -> str:
    return f"cnnbench/problem/rank-{rank}"


CONNECT_TIMEOUT_S = 300.0  # joining the process group; collectives afterwards wait up to COLLECTIVE_TIMEOUT_S
COLLECTIVE_TIMEOUT_S = 1800.0


def torchrun_ddp(backend: str, device: str, sync_bn: bool, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 timeout_s: float = COLLECTIVE_TIMEOUT_S) -> TorchDDP:
    """Join the process group described by torchrun's environment (NCCL on CUDA, gloo on CPU by default).

    A rank that cannot join within ``connect_timeout_s`` (a peer that never starts, a store or address that
    cannot be reached) stops with one line naming the cause, not after the collectives' 30-minute timeout.
    """
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
    connect = datetime.timedelta(seconds=connect_timeout_s)
    # A process that first imports torch._dynamo (torchvision, timm and the data loaders do) after gloo's process
    # group has started aborts at exit in about 4 runs of 10 on torch 2.14 ("terminate called without an active
    # exception"), process group destroyed or not; imported before, none did (tests/engine/test_distributed.py)
    import torch._dynamo  # noqa: F401
    try:
        with _native_stderr_held_back():
            store = _this_rounds_store(rank, world, connect)
            torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=connect,
                                                 device_id=dev if dev.type == "cuda" else None)
    except RuntimeError as err:  # torch.distributed's DistError, and gloo's and NCCL's failures to connect
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RankError(f"rank {rank} of {world} could not join the job's process group (store "
                        f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}) within {connect_timeout_s:g} s: "
                        f"{first} (did every rank start? is MASTER_ADDR an address every node reaches? "
                        f"GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME choose the interface)") from None
    # torch.distributed.set_timeout is torch 2.14's; the torch releases before it that setup.cfg allows have it private
    set_timeout = getattr(torch.distributed, "set_timeout", None) or torch.distributed.distributed_c10d._set_pg_timeout
    set_timeout(datetime.timedelta(seconds=timeout_s))
    ctx = DistContext(rank, local_rank, world, dev, backend, "ddp", os.environ.get("TORCHELASTIC_RUN_ID"),
                      int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return TorchDDP(ctx, sync_bn, store)


@contextlib.contextmanager
def _native_stderr_held_back():
    """torch's C++ side writes every failed connection attempt to stderr, stack trace included, whatever Python
    does with the error. While joining, that output is held back: written out when joining succeeds, dropped
    when it fails, where one line says why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        sys.stderr.buffer.write(held.read())
        sys.stderr.flush()


def _this_rounds_store(rank: int, world: int, timeout: datetime.timedelta) -> torch.distributed.Store:
    """torchrun's key-value store at MASTER_ADDR:MASTER_PORT, under a key prefix of this round of the job.

    torchrun's agent serves one store for the whole job (TORCHELASTIC_USE_AGENT_STORE) and torch's own env://
    set-up uses it without a prefix, so the workers of a restart find the keys the round before them left:
    gloo reads a killed worker's address for its peer's and fails to connect, or waits out the whole timeout
    for a connection that never comes. A prefix per TORCHELASTIC_RESTART_COUNT gives each round keys of its own.
    """
    agent_serves = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                       is_master=rank == 0 and not agent_serves, timeout=timeout, multi_tenant=True)
    return torch.distributed.PrefixStore(f"cnnbench/round-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


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

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        # Horovod never syncs buffers after the start: each rank's running statistics follow its own batches.
        # They do not enter training (BatchNorm normalises by batch statistics there), only evaluation.
        self.hvd.broadcast_parameters(list(model.named_buffers()), root_rank=0)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(tensor, op=self.hvd.Sum)

    def barrier(self) -> None:
        self.hvd.barrier()


BUILD_HOROVOD = "bash .ci/build-horovod"
WITHOUT_NCCL_TAG = "cnnbench.horovod"


def horovodrun_job(device: str, allow_without_nccl: bool = False) -> Horovod:
    """Initialise Horovod; ranks come from horovodrun's environment through ``hvd.rank()`` and friends. On CUDA a
    build without NCCL is refused unless ``allow_without_nccl``: it all-reduces every gradient through host memory
    (a blocking copy to the host, Gloo over TCP, a copy back), which throughput and scaling would then measure."""
    try:
        import horovod.torch as hvd
    except ImportError as err:
        raise UsageError(f"Horovod is not installed for torch ({err}): build it with `{BUILD_HOROVOD}` "
                         f"(Horovod 0.28.1 from source, Gloo, NCCL with a CUDA torch, about 3 minutes)") from None
    hvd.init()
    dev = pick_device(device, hvd.local_rank())
    if dev.type == "cuda" and not hvd.nccl_built() and not allow_without_nccl:
        raise UsageError(f"this Horovod was built without NCCL: on CUDA every gradient would go through host memory "
                         f"and Gloo; rebuild it on this node with `{BUILD_HOROVOD}` (NCCL from torch's nvidia-nccl "
                         f"wheel), or give --allow-horovod-without-nccl to measure that path")
    backend = "nccl" if dev.type == "cuda" and hvd.nccl_built() else "gloo"
    return Horovod(DistContext(hvd.rank(), hvd.local_rank(), hvd.size(), dev, backend, "horovod",
                               local_world_size=hvd.local_size()), hvd)


def without_nccl_tags(ctx: DistContext) -> dict[str, str]:
    """The tag a Horovod run on CUDA without NCCL carries (--allow-horovod-without-nccl); none otherwise."""
    if ctx.device.type != "cuda" or ctx.backend == "nccl":
        return {}
    return {WITHOUT_NCCL_TAG: "built without NCCL: CUDA gradients all-reduced through host memory by Gloo "
                              "(--allow-horovod-without-nccl)"}
