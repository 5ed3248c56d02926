"""Where this process sits in its job: rank, world size, device, how it was launched.

Below every layer: the data loaders shard by it, the engine's distribution seam (``train.engine.distributed``)
builds it, the studies read it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = "none"
    launcher: str = "single"
    job_id: str | None = None  # torchrun's run id: what restarted workers use to find the job's checkpoints
    local_world_size: int = 1  # the job's processes on this node, which share its cores

    @property
    def is_main(self) -> bool:
        return self.rank == 0
