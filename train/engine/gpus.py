"""The run's own GPUs as NVML sees them: the driver, which NVML devices they are, their memory and energy counters.

NVML numbers every GPU of the node, as nvidia-smi does; CUDA numbers only those ``CUDA_VISIBLE_DEVICES`` leaves
visible, in its order, named there by index, by UUID (``GPU-...``, or a unique prefix of one) or by MIG UUID
(``MIG-...``). ``nvml_indices`` maps the one numbering onto the other, so that what is logged is about the GPUs the
run trains on. An integer in ``CUDA_VISIBLE_DEVICES`` is read as NVML's (PCI bus) order, which is CUDA's with
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and on any node of identical GPUs.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

log = logging.getLogger("cnnbench")


@dataclass(frozen=True)
class NvmlGpu:
    uuid: str  # "GPU-8a3f..."
    migs: tuple[str, ...] = ()  # the UUIDs of its MIG devices ("MIG-..."), where MIG is on


def nvml_indices(visible: str | None, gpus: Sequence[NvmlGpu]) -> list[int]:
    """The NVML index of each GPU CUDA shows a process, in CUDA's order, for ``visible`` = $CUDA_VISIBLE_DEVICES
    (None: unset, every GPU) on a node of ``gpus`` (NVML's order). A MIG device maps to its GPU. As CUDA does, the
    list ends at the first entry that names no device ("-1" hides them all)."""
    if visible is None:
        return list(range(len(gpus)))
    indices: list[int] = []
    for entry in visible.split(","):
        index = _nvml_index(entry.strip(), gpus)
        if index is None:
            break
        indices.append(index)
    return indices


def _nvml_index(entry: str, gpus: Sequence[NvmlGpu]) -> int | None:
    if entry.isdigit():
        return int(entry) if int(entry) < len(gpus) else None
    if entry.startswith("MIG-GPU-"):  # the form before CUDA 11.1's: MIG-GPU-<uuid>/<instance>/<compute instance>
        entry = entry.removeprefix("MIG-").split("/")[0]
    if entry.startswith("MIG-"):
        owners = [i for i, gpu in enumerate(gpus) if entry in gpu.migs]
    elif entry.startswith("GPU-"):
        owners = [i for i, gpu in enumerate(gpus) if gpu.uuid.startswith(entry)]
    else:
        owners = []
    return owners[0] if len(owners) == 1 else None


@functools.cache
def _nvml():
    """pynvml, initialised once for the process (NVML counts its users; MLflow's GPU monitor shares it), or None
    where there is no nvidia-ml-py, no NVML library or no NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def gpu_driver_version() -> str:
    """The NVIDIA driver's version ("550.54.15"), or "unknown" without NVML."""
    nvml = _nvml()
    return "unknown" if nvml is None else nvml.nvmlSystemGetDriverVersion()


def _node_gpus(nvml) -> list[NvmlGpu]:
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpus.append(NvmlGpu(nvml.nvmlDeviceGetUUID(handle), tuple(_mig_uuids(nvml, handle))))
    return gpus


def _mig_uuids(nvml, handle) -> list[str]:
    try:
        if nvml.nvmlDeviceGetMigMode(handle)[0] != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        count = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except nvml.NVMLError:  # a GPU without MIG
        return []
    uuids = []
    for j in range(count):
        try:
            uuids.append(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)))
        except nvml.NVMLError:  # an empty slot
            continue
    return uuids


def run_nvml_indices(cuda_indices: Sequence[int]) -> list[int]:
    """The NVML indices of this process's CUDA devices ``cuda_indices``; empty without NVML."""
    nvml = _nvml()
    if nvml is None:
        return []
    mapping = nvml_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), _node_gpus(nvml))
    return [mapping[i] for i in cuda_indices if i < len(mapping)]


def _handle(device: torch.device):
    """NVML's handle of a CUDA ``device`` of this process, or None (CPU, no NVML)."""
    if device.type != "cuda":
        return None
    indices = run_nvml_indices([device.index or 0])
    return _nvml().nvmlDeviceGetHandleByIndex(indices[0]) if indices else None


def device_used_mib(device: torch.device) -> float:
    """NVML's used memory of ``device`` in MiB: whatever holds it (torch's allocator and its cache, the CUDA
    context, DALI's and NCCL's own buffers, other processes); NaN on CPU or without NVML."""
    handle = _handle(device)
    return _nvml().nvmlDeviceGetMemoryInfo(handle).used / 2**20 if handle is not None else float("nan")


@dataclass(frozen=True)
class EnergyCounter:
    read_j: Callable[[], float] | None  # joules since the driver loaded; None where there is no counter
    source: str  # where the figure comes from, or "n/a: " and why there is none


def energy_counter(device: torch.device) -> EnergyCounter:
    """NVML's total energy counter of ``device`` (Volta and later, in mJ), or why there is none."""
    if device.type != "cuda":
        return EnergyCounter(None, f"n/a: a {device.type} run (NVML's energy counters are GPUs')")
    handle = _handle(device)
    if handle is None:
        return EnergyCounter(None, "n/a: NVML is not there (nvidia-ml-py and the NVIDIA driver's libnvidia-ml)")
    nvml = _nvml()
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NVMLError as err:
        return EnergyCounter(None, f"n/a: this GPU has no NVML energy counter ({err})")
    return EnergyCounter(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000,
                         "NVML total energy consumption of each rank's GPU")
