"""Model FLOPs utilisation: the model FLOP/s a run achieves over what its devices can do at its precision.

``mfu_pct`` = 3 × forward FLOPs per image × images/s ÷ (devices × peak FLOP/s of one device); the 3 counts the
forward and a backward of about twice its cost (gradients of activations and of weights).

Two peaks, two figures. ``mfu_pct`` is over the GPU's RATED dense peak at the run's precision (``RATED``, from
NVIDIA's datasheets; sparsity figures halved), the figure published MFUs are computed against; ``--peak-tflops``
overrides it. A GPU the table does not know gets no ``mfu_pct`` (NaN) and the param says "n/a: rated peak unknown
for NAME". ``mfu_measured_peak_pct`` is over the best rate of square matrix products in the run's dtype on this
device, measured once (a couple of seconds, growing the side up to 8192 while a product stays quick) and cached in
a JSON file (``--peak-cache``, default ~/.cache/cnnbench/peak_flops.json) under the device's name, GPU driver, dtype,
torch version and, on CPU, thread count; ``--remeasure-peak`` measures it again. A CPU has no rated peak here: its
``mfu_pct`` is over the measured peak, as the param ``peak_tflops_source`` says. For fp32 on CUDA the rated peak and
the products are TF32 exactly when cuDNN convolutions are (``torch.backends.cudnn.allow_tf32``), since that is the
precision the model's FLOPs run at.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from train.engine.environment import device_name
from train.engine.gpus import gpu_driver_version
from train.engine.measure import synchronize

log = logging.getLogger("cnnbench")

SIDES = (256, 512, 1024, 2048, 4096, 8192)
MEASURE_SECONDS = 2.0


@dataclass(frozen=True)
class Rated:
    """One GPU's rated dense peaks in TFLOP/s (None: no such tensor-core path) and the datasheet they come from."""

    fp32: float
    tf32: float | None
    bf16: float | None
    fp16: float
    source: str


_H100 = "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com, 2024)"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com, 2024)"
_A100 = "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com, 1758950-r4)"
_V100 = "NVIDIA V100 Tensor Core GPU datasheet (nvidia.com, Jan 2020)"
# Datasheets give tensor-core figures "with sparsity" (2:4 structured); the dense peak is half of it (written
# "sparse / 2" below). Matched in full on the name torch.cuda.get_device_name reports; a MIG slice
# ("... MIG 1g.10gb") has a share of the GPU and matches none.
RATED: tuple[tuple[str, Rated], ...] = (
    (r"NVIDIA H100 \d+GB HBM3", Rated(67, 989 / 2, 1979 / 2, 1979 / 2, f"H100 SXM, {_H100}")),
    (r"NVIDIA H100 PCIe", Rated(51, 756 / 2, 1513 / 2, 1513 / 2, f"H100 PCIe, {_H100}")),
    (r"NVIDIA H100 NVL", Rated(60, 835 / 2, 1671 / 2, 1671 / 2, f"H100 NVL, {_H100}")),
    (r"NVIDIA H200", Rated(67, 989 / 2, 1979 / 2, 1979 / 2, f"H200 SXM, {_H200}")),
    (r"NVIDIA H200 NVL", Rated(60, 835 / 2, 1671 / 2, 1671 / 2, f"H200 NVL, {_H200}")),
    (r"NVIDIA B200", Rated(75, 2200 / 2, 4500 / 2, 4500 / 2,
                           "B200 (HGX B200, per GPU), NVIDIA HGX platform datasheet (nvidia.com, 2024)")),
    (r"NVIDIA A100-SXM4-(40|80)GB", Rated(19.5, 312 / 2, 624 / 2, 624 / 2, f"A100 SXM, {_A100}")),
    (r"NVIDIA A100-PCIE-40GB|NVIDIA A100 80GB PCIe", Rated(19.5, 312 / 2, 624 / 2, 624 / 2, f"A100 PCIe, {_A100}")),
    # the L40S datasheet gives its dense figures beside the sparse ones (183 | 366*, 362.05 | 733*)
    (r"NVIDIA L40S", Rated(91.6, 183, 362.05, 362.05, "L40S, NVIDIA L40S GPU datasheet (nvidia.com, 2023)")),
    (r"NVIDIA L4", Rated(30.3, 120 / 2, 242 / 2, 242 / 2, "L4, NVIDIA L4 Tensor Core GPU datasheet (nvidia.com)")),
    (r"NVIDIA A10", Rated(31.2, 125 / 2, 250 / 2, 250 / 2, "A10, NVIDIA A10 Tensor Core GPU datasheet (nvidia.com)")),
    # Volta: fp16 tensor cores only (no TF32, no bf16), no sparsity
    (r"Tesla V100-SXM2-(16|32)GB", Rated(15.7, None, None, 125, f"V100 SXM2, {_V100}")),
    (r"Tesla V100-PCIE-(16|32)GB", Rated(14, None, None, 112, f"V100 PCIe, {_V100}")),
    (r"Tesla V100S-PCIE-32GB", Rated(16.4, None, None, 130, f"V100S PCIe, {_V100}")),
)


@dataclass(frozen=True)
class Peak:
    tflops: float  # NaN: unknown, ``source`` says why
    source: str


@dataclass(frozen=True)
class Peaks:
    """The denominators of ``mfu_pct`` (rated, or given) and of ``mfu_measured_peak_pct``."""

    rated: Peak
    measured: Peak


def mfu_pct(flops_per_image: float, images_per_sec: float, peak_tflops: float, devices: int) -> float:
    return 100 * 3 * flops_per_image * images_per_sec / (devices * peak_tflops * 1e12)


def math_mode(dtype: torch.dtype) -> str:
    """The precision a run's matrix products run at on a GPU: fp32 is TF32 exactly when cuDNN convolutions are."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def rated_peak(name: str, mode: str) -> Peak:
    """The rated dense peak of the GPU torch calls ``name`` at ``mode`` (``math_mode``), or NaN and why not."""
    for pattern, rated in RATED:
        if re.fullmatch(pattern, name):
            tflops = getattr(rated, mode)
            if tflops is None:
                return Peak(math.nan, f"n/a: {name} has no {mode} tensor cores, hence no rated {mode} peak")
            return Peak(tflops, f"rated dense {mode}: {rated.source}")
    return Peak(math.nan, f"n/a: rated peak unknown for {name}")


def job_peaks(dist, dtype: torch.dtype, given: float | None, cache: str | None, remeasure: bool = False) -> Peaks:
    """Rank 0 finds the peaks and shares them: one figure each for the job, one process measuring and writing the
    cache."""
    if dist.ctx.is_main:
        peaks = find_peaks(dist.ctx.device, dtype, given, cache, remeasure)
    else:
        peaks = Peaks(Peak(0.0, "rank 0's"), Peak(0.0, "rank 0's"))
    shared = dist.all_reduce_sum(torch.tensor([peaks.rated.tflops, peaks.measured.tflops], dtype=torch.float64,
                                              device=dist.ctx.device)).tolist()
    return Peaks(Peak(shared[0], peaks.rated.source), Peak(shared[1], peaks.measured.source))


def peak_params(peaks: Peaks) -> dict:
    """The run's params saying what each MFU is over; an unknown rated peak is "n/a" and why."""
    rated = peaks.rated.tflops if math.isfinite(peaks.rated.tflops) else peaks.rated.source
    return {"peak_tflops": rated, "peak_tflops_source": peaks.rated.source,
            "measured_peak_tflops": peaks.measured.tflops, "measured_peak_tflops_source": peaks.measured.source}


def find_peaks(device: torch.device, dtype: torch.dtype, given: float | None, cache: str | None,
               remeasure: bool = False) -> Peaks:
    measured = find_peak(device, dtype, None, cache, remeasure)
    if given is not None:
        return Peaks(Peak(given, "given (--peak-tflops)"), measured)
    if device.type != "cuda":
        return Peaks(Peak(measured.tflops, f"{measured.source} (a CPU has no rated peak: the measured one)"), measured)
    return Peaks(rated_peak(device_name(device), math_mode(dtype)), measured)


def find_peak(device: torch.device, dtype: torch.dtype, given: float | None, cache: str | None,
              remeasure: bool = False) -> Peak:
    """The measured peak (``given`` wins): from the cache unless ``remeasure``, else measured and cached."""
    if given is not None:
        return Peak(given, "given (--peak-tflops)")
    path = Path(cache) if cache else default_cache()
    key = cache_key(device, dtype)
    entries = _read(path)
    if key in entries and not remeasure:
        return Peak(entries[key]["tflops"], f"cached in {path}: {entries[key]['how']}")
    tflops, side = measure_peak_tflops(device, dtype)
    how = f"{datetime.date.today()} by {side}x{side} {_dtype_name(dtype)} matrix products"
    _write(path, {**entries, key: {"tflops": tflops, "how": how}})
    return Peak(tflops, f"measured {how}")


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnbench" / "peak_flops.json"


def cache_key(device: torch.device, dtype: torch.dtype) -> str:
    parts = [device_name(device), _dtype_name(dtype), f"torch {torch.__version__}"]
    if device.type == "cpu":
        return " | ".join([*parts, f"{torch.get_num_threads()} threads"])
    parts.append(f"driver {gpu_driver_version()}")  # a new driver may bring other kernels and clocks
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        parts.append("tf32")
    return " | ".join(parts)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def measure_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = MEASURE_SECONDS) -> tuple[float, int]:
    """The best rate over growing sides; a side stops growing once one product takes a 20th of ``seconds``."""
    best, best_side = 0.0, SIDES[0]
    with _tf32_as_convolutions(device, dtype):
        for side in SIDES:
            rate, one_product_s = _product_rate(side, device, dtype, seconds / len(SIDES))
            if rate > best:
                best, best_side = rate, side
            if one_product_s > seconds / 20:
                break
    return best / 1e12, best_side


def _product_rate(side: int, device: torch.device, dtype: torch.dtype, seconds: float) -> tuple[float, float]:
    """Best FLOP/s over batches of products timed between synchronisations, and the seconds of one product."""
    a, b = (torch.randn(side, side, device=device).to(dtype) for _ in range(2))
    out = torch.matmul(a, b)  # warm-up: library initialisation, kernel choice, allocation
    synchronize(device)
    best, batch, spent, per_product = 0.0, 1, 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        for _ in range(batch):
            torch.matmul(a, b, out=out)
        synchronize(device)
        took = time.perf_counter() - start
        per_product, spent = took / batch, spent + took
        best = max(best, 2 * side**3 / per_product)
        batch *= 2  # longer batches make the synchronisation's cost negligible
    return best, per_product


@contextlib.contextmanager
def _tf32_as_convolutions(device: torch.device, dtype: torch.dtype):
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    matmul = torch.backends.cuda.matmul
    before, matmul.allow_tf32 = matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        matmul.allow_tf32 = before


def _read(path: Path) -> dict:
    """The cache's well-formed entries; a missing or unreadable cache is an empty one (its peaks are measured again)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {key: e for key, e in entries.items()
            if isinstance(e, dict) and isinstance(e.get("tflops"), (int, float)) and e["tflops"] > 0 and "how" in e}


def _write(path: Path, entries: dict) -> None:
    """Atomically (a concurrent reader sees the old file or the new one); a cache that cannot be written is skipped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
            json.dump(entries, tmp, indent=1)
        os.replace(tmp.name, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        log.warning("cannot cache the measured peak in %s (%s): it will be measured again next time", path, err)
