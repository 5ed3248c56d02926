"""Where a training step's time goes: data wait, forward, backward, all-reduce not hidden behind backward, optimizer.

Measured on a sample of steps (the 1st, then every ``--breakdown-every``-th steady-state step of an epoch), so
the cost stays far under 1 %. A sampled step is cut by marks into consecutive intervals, each named after the
part it ends: on CUDA each mark is an event recorded in the stream (no host synchronisation; the events are read
after the epoch timer's last synchronisation), so the parts are times on the device's timeline, and the data wait
is the time the device had nothing to do until the batch arrived; on CPU, where every operation has finished when
it returns, each mark is a ``perf_counter`` reading. Steps that are not sampled record nothing.

All-reduce that backward does not hide:
- DDP reduces gradient buckets while backward still runs, and ``backward()`` returns only when every bucket is
  reduced. A comm hook (DDP's own all-reduce, plus a mark) marks when the last bucket was handed over, which is
  when backward's computation ended; the rest of ``backward()`` is all-reduce not hidden behind it.
- Horovod's ``optimizer.step()`` first waits for the all-reduces its hooks started during backward; on a sampled
  step that wait (``optimizer.synchronize()``) is marked apart from the update.

``step_time_ms`` is not the sum of the parts: it is the epoch timer's steady-state seconds / steps, measured apart,
so that the parts adding up to it is a check of the method. Parts and step time are means per rank, then over ranks.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from train.engine.distributed import gather_per_rank
from train.engine.measure import EpochTiming, warmup_of
from train.engine.schema import at_rank

PARTS = ("data_wait", "forward", "backward", "allreduce_exposed", "optimizer")


class DeviceClock:
    """Marks on the device's timeline: CUDA events recorded in the current stream, else ``perf_counter``."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else 1000 * (end - start)


class StepBreakdown:
    """Marks the parts of sampled steps (``iterate`` wraps the loader, ``Step`` marks the rest); ``summary`` per epoch."""

    def __init__(self, device: torch.device, every: int, warmup_steps: int, model: nn.Module | None = None):
        self.every, self.warmup_steps = every, warmup_steps
        self.clock = DeviceClock(device)
        self.sample: list | None = None  # (part, mark) pairs of the step being sampled; None on other steps
        self.samples: list[list] = []  # this epoch's
        self.steady_steps = 0
        self._grads_ready = None  # DDP: mark of the last gradient bucket handed to the all-reduce
        if isinstance(model, DistributedDataParallel):
            model.register_comm_hook(None, self._bucket_ready)

    @classmethod
    def disabled(cls) -> StepBreakdown:
        """Samples nothing: for a ``Step`` used outside the engine's epochs."""
        return cls(torch.device("cpu"), every=0, warmup_steps=0)

    def iterate(self, loader: Iterable, steps: int, timed_steps: int | None = None) -> Iterator:
        """``loader``'s ``steps`` batches; a sampled step starts with the request for its batch. Only the steady
        state the epoch timer times is sampled: after the warm-up, up to ``timed_steps`` (a short last batch
        left out)."""
        last = steps if timed_steps is None else min(timed_steps, steps)
        warmup = warmup_of(self.warmup_steps, last)
        self.samples, self.steady_steps = [], last - warmup
        batches = iter(loader)
        for step in range(1, steps + 1):
            self.sample = None
            if step <= last and self._sampled(step - warmup):
                self.sample = [("start", self.clock.now())]
                self.samples.append(self.sample)
            batch = next(batches)
            self.mark("data_wait")
            yield batch

    def _sampled(self, steady_step: int) -> bool:
        return self.every > 0 and steady_step >= 1 and (steady_step - 1) % self.every == 0

    def mark(self, part: str) -> None:
        """``part`` of a sampled step ends here; nothing happens on other steps."""
        if self.sample is not None:
            self.sample.append((part, self.clock.now()))

    def mark_backward(self) -> None:
        """Backward has returned; under DDP its computation ended at the last bucket, and the rest was all-reduce."""
        if self.sample is not None and self._grads_ready is not None:
            self.sample.append(("backward", self._grads_ready))
            self._grads_ready = None
            self.mark("allreduce_exposed")
        else:
            self.mark("backward")

    @contextlib.contextmanager
    def update(self, optimizer: torch.optim.Optimizer):
        """Around the optimizer's step: Horovod's wait for its all-reduces is marked apart on sampled steps."""
        if self.sample is None or not hasattr(optimizer, "skip_synchronize"):
            yield
            return
        optimizer.synchronize()
        self.mark("allreduce_exposed")
        with optimizer.skip_synchronize():
            yield

    def _bucket_ready(self, process_group, bucket):
        """DDP comm hook: DDP's own all-reduce, after noting the time (the last bucket's note is the one kept)."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        if self.sample is not None:
            self._grads_ready = self.clock.now()
        return allreduce_hook(process_group, bucket)

    def summary(self, dist, timing: EpochTiming) -> dict:
        """The epoch's metrics, once the device has finished the epoch (the timer synchronised at its end); a job of
        several ranks adds each rank's own step time (``busy_ms``, per rank)."""
        per_part = [self._durations(sample) for sample in self.samples]
        means = [statistics.fmean(d[part] for d in per_part) if per_part else math.nan for part in PARTS]
        busy = statistics.median(sum(d[p] for p in PARTS if p != "allreduce_exposed") for d in per_part) \
            if per_part else math.nan
        step_ms = 1000 * timing.seconds / self.steady_steps
        ranks = gather_per_rank(dist, [step_ms, *means, len(self.samples), busy])
        step_ms, *means, sampled = (statistics.fmean(column) for column in list(zip(*ranks))[:-1])
        per_rank = {at_rank("busy_ms", r): row[-1] for r, row in enumerate(ranks)} if len(ranks) > 1 else {}
        return {"step_time_ms": step_ms, **{f"{part}_ms": ms for part, ms in zip(PARTS, means)},
                "breakdown_steps": sampled, **per_rank}

    def _durations(self, sample: list) -> dict[str, float]:
        durations = dict.fromkeys(PARTS, 0.0)
        for (_, start), (part, end) in zip(sample, sample[1:]):
            durations[part] += self.clock.ms(start, end)
        return durations
