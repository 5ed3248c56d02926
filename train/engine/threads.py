"""How many CPU threads each process of a job gives torch, and why.

On a CPU every process of a node computes on the same cores: left to torch, each of them takes all of them, and
two Horovod processes on two cores trained resnet-20 at 70 images/s where one thread each gave 460 (docs/
distributed.md). So the default divides the cores this process may run on (its CPU affinity, which taskset,
cgroups' cpusets and Slurm narrow) among the job's processes on this node. ``--threads`` wins, then an
``OMP_NUM_THREADS`` the user set; torchrun's own ``OMP_NUM_THREADS=1``, which it sets for several workers when the
user did not, is a default like this one and gives way to it. On CUDA devices torch's choice stands unless
``--threads`` or ``OMP_NUM_THREADS`` says otherwise: the work is on the GPU. The run logs the count as
``num_threads`` and the reason as ``num_threads_source``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import psutil
import torch


@dataclass(frozen=True)
class Threads:
    count: int
    source: str  # why this count, in words (the run's num_threads_source)


def choose_threads(given: int | None, omp: str | None, cores: int, local_processes: int) -> Threads:
    """The rule: ``--threads``, else ``OMP_NUM_THREADS`` (its first level, when it is a positive number), else the
    ``cores`` this process may use divided among the ``local_processes`` of its node, at least one each."""
    if given is not None:
        return Threads(given, "--threads")
    first = (omp or "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        return Threads(int(first), f"OMP_NUM_THREADS={omp}")
    count = max(1, cores // local_processes)
    return Threads(count, f"{cores} cores this process may use / {local_processes} "
                          f"process{'es' if local_processes > 1 else ''} of the job on this node")


def process_threads(given: int | None, local_processes: int, device: torch.device) -> Threads:
    """This process's threads by ``choose_threads``, from its environment; on a CUDA device without ``--threads``
    or ``OMP_NUM_THREADS``, torch's own choice."""
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp is not None and _set_by_torchrun(omp):
        omp = None
    if device.type != "cpu" and given is None and omp is None:
        return Threads(torch.get_num_threads(), "torch's default (cores are divided on CPU runs only)")
    return choose_threads(given, omp, len(os.sched_getaffinity(0)), local_processes)


def _set_by_torchrun(omp: str) -> bool:
    """torchrun sets OMP_NUM_THREADS=1 in its workers' environment when its own has none: the worker's value is
    then torchrun's, not the user's."""
    if omp != "1" or "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    try:
        return "OMP_NUM_THREADS" not in psutil.Process().parent().environ()
    except (psutil.Error, AttributeError):  # no parent to read (AttributeError: None): take the value as given
        return False
