"""Run a function on the two ranks of a real gloo process group, in two fresh processes, and collect its results.

For tests of what the engine computes across ranks (``gather_per_rank``, the seam's broadcasts) without a launcher:
``on_two_ranks(fn, *args)`` calls ``fn(dist, *args)`` on rank 0 and rank 1, where ``dist`` is the engine's
``TorchDDP`` seam, and returns ``[result of rank 0, result of rank 1]``. ``fn`` must be importable (a module-level
function), its results picklable.
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

WORLD = 2


def on_two_ranks(fn, *args) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_rank, args=(Path(tmp), fn, args), nprocs=WORLD, start_method="spawn", join=True)
        return [pickle.loads((Path(tmp) / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]


def _rank(rank: int, tmp: Path, fn, args) -> None:
    from train.context import DistContext
    from train.engine.distributed import TorchDDP

    torch.set_num_threads(1)
    store = torch.distributed.FileStore(str(tmp / "store"), WORLD)
    torch.distributed.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
    try:
        dist = TorchDDP(DistContext(rank=rank, local_rank=rank, world_size=WORLD, backend="gloo", launcher="ddp"))
        result = fn(dist, *args)
    finally:
        torch.distributed.destroy_process_group()
    (tmp / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
