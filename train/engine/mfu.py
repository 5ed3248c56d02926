"""Model FLOPs utilisation: the model FLOP/s a run achieves over what its devices can do at its precision.

``mfu_pct`` = 3 × forward FLOPs per image × images/s ÷ (devices × peak FLOP/s of one device); the 3 counts the
forward and a backward of about twice its cost (gradients of activations and of weights).

The peak is ``--peak-tflops`` when given; otherwise the best rate of square matrix products in the run's dtype on
this device, measured once (a couple of seconds, growing the side up to 8192 while a product stays quick) and
cached in a JSON file (``--peak-cache``, default ~/.cache/cnnbench/peak_flops.json) under the device's name, dtype,
torch version and, on CPU, thread count. For fp32 on CUDA the products use TF32 exactly when cuDNN convolutions
do (``torch.backends.cudnn.allow_tf32``), since that is the precision the model's FLOPs run at. The run logs the
figure (``peak_tflops``) and where it came from (``peak_tflops_source``): given, measured or cached.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from train.engine.environment import device_name
from train.engine.measure import synchronize

log = logging.getLogger("cnnbench")

SIDES = (256, 512, 1024, 2048, 4096, 8192)
MEASURE_SECONDS = 2.0


@dataclass(frozen=True)
class Peak:
    tflops: float
    source: str


def mfu_pct(flops_per_image: float, images_per_sec: float, peak_tflops: float, devices: int) -> float:
    return 100 * 3 * flops_per_image * images_per_sec / (devices * peak_tflops * 1e12)


def job_peak(dist, dtype: torch.dtype, given: float | None, cache: str | None) -> Peak:
    """Rank 0 finds the peak and shares it: one figure for the job, one process measuring and writing the cache."""
    peak = find_peak(dist.ctx.device, dtype, given, cache) if dist.ctx.is_main else Peak(0.0, "rank 0's")
    shared = dist.all_reduce_sum(torch.tensor([peak.tflops], dtype=torch.float64, device=dist.ctx.device))
    return Peak(shared.item(), peak.source)


def find_peak(device: torch.device, dtype: torch.dtype, given: float | None, cache: str | None) -> Peak:
    if given is not None:
        return Peak(given, "given (--peak-tflops)")
    path = Path(cache) if cache else default_cache()
    key = cache_key(device, dtype)
    entries = _read(path)
    if key in entries:
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
        parts.append(f"{torch.get_num_threads()} threads")
    elif dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
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
