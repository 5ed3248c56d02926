"""The run's own GPUs as NVML sees them: driver, which NVML devices they are, their energy counters and memory.

NVML numbers every GPU of the node; CUDA numbers those ``CUDA_VISIBLE_DEVICES`` leaves visible, in its order, by
index or by UUID (``GPU-...``, or ``MIG-...`` for a MIG slice). ``nvml_indices`` maps the one onto the other, so
what is logged is about the GPUs the run trains on, named by their NVML index and UUID.
"""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("cnnbench")


@contextlib.contextmanager
def nvml():
    """pynvml, initialised, or None where there is no nvidia-ml-py, no NVML library or no NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        yield None
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        yield None
        return
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def gpu_driver_version() -> str:
    """The NVIDIA driver's version ("550.54.15"), or "unknown" without NVML."""
    with nvml() as lib:
        return "unknown" if lib is None else lib.nvmlSystemGetDriverVersion()
