"""How cnnbench measures: throughput over the steady state, data wait, peak memory.

Throughput is images / wall seconds between two device synchronisations: one after the warm-up steps
of the epoch, one after its last full batch (a shorter last batch is trained but not timed: with
``--compile`` or cudnn.benchmark its new shape costs a recompile or an autotune that is no part of the
steady state); in between, a synchronisation every ``window_steps`` steps closes a timing window, so a
run also reports the median and spread of the windows. Nothing else in the step synchronises (no
``.item()``): loss and correct counts accumulate on the device.
"""
from __future__ import annotations

import ctypes
import gc
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import torch

from train.engine.schema import TRUSTED_SPREAD_PCT, is_trusted_spread

WINDOWS_PER_EPOCH = 10  # the automatic window size aims at this many windows per epoch ...
MAX_WINDOW_STEPS = 20  # ... with at most this many steps each (a synchronisation per 20 steps costs nothing)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Window(NamedTuple):
    images: int
    seconds: float
    full: bool  # False for the epoch's last, shorter window

    @property
    def rate(self) -> float:
        return images_per_sec(self.images, self.seconds)


def steady_rates(windows: Sequence[Window]) -> list[float]:
    """The images/s of full windows; a partial window counts only when there is no full one."""
    full = [w for w in windows if w.full] or list(windows)
    return [w.rate for w in full if w.seconds > 0]


def median_and_spread(rates: Sequence[float]) -> tuple[float, float]:
    """Median images/s and spread (100 * (max - min) / median); the spread is NaN with fewer than two windows:
    one window says nothing about stability."""
    if not rates:
        return math.nan, math.nan
    median = statistics.median(rates)
    return median, (100 * (max(rates) - min(rates)) / median if len(rates) > 1 else math.nan)


def window_series(windows_before: int, rates: Sequence[float]) -> dict[str, list[tuple[int, float]]]:
    """An epoch's steady-state window rates as the step-"window" metric ``train_images_per_sec_window``, with
    step = the window's place in the run, after the ``windows_before`` windows of its earlier epochs and segments:
    unique however many windows an epoch had (a run resumed with other --window-steps or --warmup-steps), so a
    later comparison (``cnnbench compare``) reads every window of the run."""
    return {"train_images_per_sec_window": [(windows_before + k, rate) for k, rate in enumerate(rates, 1)]}


def images_per_sec(images: float, seconds: float) -> float:
    """Throughput as the brief defines it: images / wall seconds of the steady state (NaN without seconds). A run's
    ``train_images_per_sec`` is this over the steady-state images and seconds of all its epochs and segments."""
    return images / seconds if seconds > 0 else math.nan


class RunClock:
    """MLPerf Training's clock over one segment of a run: started at run start, never paused (evaluation,
    checkpoints and logging between epochs count); ``seconds`` adds what the run's earlier segments counted."""

    now = staticmethod(time.perf_counter)

    def __init__(self, earlier_segments: float = 0.0):
        self.earlier_segments = earlier_segments
        self.started = self.now()

    def seconds(self) -> float:
        return self.earlier_segments + self.now() - self.started


def job_windows(per_rank: Sequence[Sequence[Window]]) -> list[Window]:
    """The job's windows from every rank's: window k holds all ranks' images of their k-th window over the slowest
    rank's seconds for it. Ranks run the same steps, so their k-th windows cover the same steps."""
    return [Window(sum(w.images for w in ranks), max(w.seconds for w in ranks), ranks[0].full)
            for ranks in zip(*per_rank)]


@dataclass
class EpochTiming:
    images: int = 0  # steady-state images
    seconds: float = 0.0  # steady-state wall seconds
    data_wait: float = 0.0  # steady-state seconds blocked on the loader
    epoch_seconds: float = 0.0  # the whole epoch, warm-up and a short last batch included
    windows: list[Window] = field(default_factory=list)
    energy_j: float = math.nan  # the device's energy over the steady state (NaN: no energy counter)
    epoch_energy_j: float = math.nan  # ... over the whole epoch

    @property
    def images_per_sec(self) -> float:
        return images_per_sec(self.images, self.seconds)

    @property
    def median_images_per_sec(self) -> float:
        return median_and_spread(steady_rates(self.windows))[0]

    @property
    def spread_pct(self) -> float:
        return median_and_spread(steady_rates(self.windows))[1]

    @property
    def data_wait_frac(self) -> float:
        return self.data_wait / self.seconds if self.seconds > 0 else float("nan")


def warmup_of(warmup_steps: int, steps: int) -> int:
    """The warm-up steps of an epoch of ``steps``: an epoch shorter than the warm-up still gets one timed step."""
    return min(warmup_steps, max(steps - 1, 0))


def full_batch_steps(num_samples: int, batch_size: int) -> int:
    """The steps of an epoch of ``num_samples`` whose batch is full (at least one: an epoch of one short batch is
    timed on that batch, there being no other)."""
    return max(num_samples // batch_size, 1)


def auto_window_steps(timed_steps: int) -> int:
    """About ``WINDOWS_PER_EPOCH`` windows per epoch, so that short runs also get a median and a spread."""
    return min(MAX_WINDOW_STEPS, max(1, timed_steps // WINDOWS_PER_EPOCH))


class EpochTimer:
    """Wraps a loader: yields its batches and times the epoch as described in the module docstring.

    ``window_steps`` None sizes the windows to the epoch (``auto_window_steps``).
    """

    def __init__(self, device: torch.device, warmup_steps: int, window_steps: int | None,
                 on_window: Callable[[float], None] | None = None, energy_j: Callable[[], float] | None = None):
        self.device = device
        self.warmup_steps = warmup_steps
        self.window_steps = window_steps
        self.on_window = on_window
        self.energy_j = energy_j or (lambda: math.nan)  # a device's energy counter, read where the clock is
        self.timing = EpochTiming()

    def iterate(self, loader: Iterable, steps: int, timed_steps: int | None = None) -> Iterator:
        """``steps`` is len(loader); steps after ``timed_steps`` (a short last batch) are trained, not timed."""
        t = self.timing = EpochTiming()
        last = steps if timed_steps is None else min(timed_steps, steps)
        warmup = warmup_of(self.warmup_steps, last)
        per_window = self.window_steps or auto_window_steps(last - warmup)
        synchronize(self.device)
        epoch_start = window_start = time.perf_counter()
        epoch_energy = steady_energy = last_energy = self.energy_j()
        window_images = window_steps = 0
        batches = iter(loader)
        for step in range(1, steps + 1):
            asked = time.perf_counter()
            batch = next(batches)
            if warmup < step <= last:
                t.data_wait += time.perf_counter() - asked
            yield batch
            if step == warmup:
                synchronize(self.device)
                window_start = time.perf_counter()
                steady_energy = self.energy_j()
            if not warmup < step <= last:
                continue
            window_images += len(batch[1])
            window_steps += 1
            if window_steps == per_window or step == last:
                synchronize(self.device)
                now = time.perf_counter()
                last_energy = self.energy_j()
                self._close_window(Window(window_images, now - window_start, window_steps == per_window))
                window_start, window_images, window_steps = now, 0, 0
        t.epoch_seconds = time.perf_counter() - epoch_start
        t.energy_j, t.epoch_energy_j = last_energy - steady_energy, self.energy_j() - epoch_energy

    def _close_window(self, window: Window) -> None:
        t = self.timing
        t.windows.append(window)
        t.images += window.images
        t.seconds += window.seconds
        if self.on_window is not None:
            self.on_window(window.rate)


def format_pct(value: float) -> str:
    """A percentage for people: 'n/a' where it is undefined (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.1f} %"


def format_spread(spread_pct: float) -> str:
    """A timing-window spread for people, with a caution where it makes its figure untrustworthy."""
    if is_trusted_spread(spread_pct):
        return format_pct(spread_pct)
    if math.isnan(spread_pct):
        return "n/a: one timing window, steadiness unknown"
    return f"{format_pct(spread_pct)}: over {TRUSTED_SPREAD_PCT:g} %, not to be trusted"


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or on CPU the process's peak resident set size (VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux/glibc: first hand back what was freed (glibc keeps it resident), so the peak is what comes next;
    # then "5" resets the process's peak resident set size (VmHWM) to its current size
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: max allocated by tensors; CPU: peak resident set size since the last reset (getrusage's cannot be
    reset), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1]) / 1024


def peak_memory_reserved_mib(device: torch.device) -> float:
    """CUDA: the most torch's caching allocator reserved from the device (what out-of-memory depends on), in MiB;
    NaN on CPU, which has no such cache."""
    return torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else math.nan
