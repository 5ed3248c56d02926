"""How cnnbench measures: throughput over the steady state, data wait, FLOPs, peak memory.

Throughput is images / wall seconds between two device synchronisations: one after the warm-up steps
of the epoch, one at the end; in between, a synchronisation every ``window_steps`` steps closes a
timing window, so a run also reports the median and spread of the windows. Nothing else in the
step synchronises (no ``.item()``): loss and correct counts accumulate on the device.
"""
from __future__ import annotations

import math
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Window(NamedTuple):
    images: int
    seconds: float
    full: bool  # False for the epoch's last, shorter window


@dataclass
class EpochTiming:
    images: int = 0  # steady-state images
    seconds: float = 0.0  # steady-state wall seconds
    data_wait: float = 0.0  # steady-state seconds blocked on the loader
    epoch_seconds: float = 0.0  # the whole epoch, warm-up included
    windows: list[Window] = field(default_factory=list)

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def _window_rates(self) -> list[float]:
        """Full windows only; a partial window counts only when there is no full one."""
        full = [w for w in self.windows if w.full] or self.windows
        return [w.images / w.seconds for w in full if w.seconds > 0]

    @property
    def median_images_per_sec(self) -> float:
        rates = self._window_rates()
        return statistics.median(rates) if rates else float("nan")

    @property
    def spread_pct(self) -> float:
        """NaN with fewer than two windows: one window says nothing about stability."""
        rates = self._window_rates()
        return 100 * (max(rates) - min(rates)) / statistics.median(rates) if len(rates) > 1 else float("nan")

    @property
    def data_wait_frac(self) -> float:
        return self.data_wait / self.seconds if self.seconds > 0 else float("nan")


def warmup_of(warmup_steps: int, steps: int) -> int:
    """The warm-up steps of an epoch of ``steps``: an epoch shorter than the warm-up still gets one timed step."""
    return min(warmup_steps, max(steps - 1, 0))


class EpochTimer:
    """Wraps a loader: yields its batches and times the epoch as described in the module docstring."""

    def __init__(self, device: torch.device, warmup_steps: int, window_steps: int,
                 on_window: Callable[[float], None] | None = None):
        self.device = device
        self.warmup_steps = warmup_steps
        self.window_steps = window_steps
        self.on_window = on_window
        self.timing = EpochTiming()

    def iterate(self, loader: Iterable, steps: int) -> Iterator:
        """``steps`` is len(loader)."""
        t = self.timing = EpochTiming()
        warmup = warmup_of(self.warmup_steps, steps)
        synchronize(self.device)
        epoch_start = window_start = time.perf_counter()
        window_images = window_steps = 0
        batches = iter(loader)
        for step in range(1, steps + 1):
            asked = time.perf_counter()
            batch = next(batches)
            if step > warmup:
                t.data_wait += time.perf_counter() - asked
            yield batch
            if step == warmup:
                synchronize(self.device)
                window_start = time.perf_counter()
                continue
            if step < warmup:
                continue
            window_images += len(batch[1])
            window_steps += 1
            if window_steps == self.window_steps or step == steps:
                synchronize(self.device)
                now = time.perf_counter()
                self._close_window(Window(window_images, now - window_start, window_steps == self.window_steps))
                window_start, window_images, window_steps = now, 0, 0
        t.epoch_seconds = time.perf_counter() - epoch_start

    def _close_window(self, window: Window) -> None:
        t = self.timing
        t.windows.append(window)
        t.images += window.images
        t.seconds += window.seconds
        if self.on_window is not None:
            self.on_window(window.images / window.seconds)


def format_pct(value: float) -> str:
    """A percentage for people: 'n/a' where it is undefined (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.1f} %"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
