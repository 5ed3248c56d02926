"""The distribution seam: where the process sits in the job, and the collective operations it needs.

The engine talks only to a ``Distributed`` object. ``SingleProcess`` is the trivial one; the DDP and
Horovod implementations plug in here without the engine importing either library.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = "none"
    launcher: str = "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class SingleProcess:
    """One process, one device: every collective is the identity."""

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


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` means the GPU of this local rank when CUDA is there, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise UsageError(f"--device cuda: no CUDA device {local_rank} on this machine "
                             f"({torch.cuda.device_count()} visible)")
        return torch.device("cuda", local_rank)
    return torch.device(requested)
