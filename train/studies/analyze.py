"""What ImageNet nets cost on this device, after Bianco et al. 2018: one MLflow run per net.

  cnnbench analyze --arch resnet50 densenet121 mobilenet_v2 --batch-sizes 1 2 4 8 16 32 64
  cnnbench analyze --arch AlexNet VGG16 ResNet50 --device cuda --precision bf16 --channels-last --compile

For each net, at its native input size and with random weights (speed does not depend on their values):
parameters, and forward GFLOPs and GMACs per image (torch's FLOP counter, on the meta device); at each batch
size, the latency of a forward pass, median and 95th percentile over --iters timed passes after --warmup
untimed ones, each pass between two device synchronisations, with images/s (batch / median latency) and peak
memory; then images/s of SGD training steps at --train-batch-size.

Accuracy is not measured here: the plots take the Acc@1 that cnnbench evaluate logged in the same experiment,
else the published one (the reference ranking). The table and plots go to --out and are logged as artifacts
of every run of the call; the table is also printed.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from train.engine.builders import AMP_DTYPES
from train.engine.config import DEFAULTS, OneLineErrorParser, pos_int
from train.engine.distributed import pick_device
from train.engine.environment import environment_params
from train.engine.launch import setup_logging
from train.engine.measure import peak_memory_mib, reset_peak_memory, synchronize
from train.engine.schema import at_batch_size
from train.engine.tracking import MlflowTracker, open_store, tracking_uri
from train.models import ModelEntry, complexity, create_model
from train.studies.evaluate import add_device_and_tracking_flags
from train.studies.figures import significant
from train.studies.helptext import LaidOutHelp
from train.studies.pretrained import imagenet_entry
from train.studies.report import experiment_runs, writable_folder

log = logging.getLogger("cnnbench")
NUM_CLASSES = 1000  # ImageNet-1k heads, as published


@dataclass(frozen=True)
class Settings:
    device: torch.device
    precision: str
    channels_last: bool
    compile: bool
    batch_sizes: tuple[int, ...]
    train_batch_size: int
    warmup: int
    iters: int

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = AMP_DTYPES[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def images(self, batch: int, size: int) -> torch.Tensor:
        return torch.randn(batch, 3, size, size, device=self.device).contiguous(memory_format=self.memory_format)


def main(argv: list[str] | None = None, prog: str = "cnnbench analyze") -> int:
    args = _parser(prog).parse_args(argv)
    setup_logging(is_main=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(pick_device(args.device), args.precision, args.channels_last, args.compile,
                        tuple(sorted(set(args.batch_sizes))), args.train_batch_size, args.warmup, args.iters)
    entries = [imagenet_entry(arch) for arch in args.arch]  # every name checked before any work
    uri = tracking_uri(args.tracking_uri)
    client = open_store(uri)  # and the store: an unreachable one fails now, not after the first net
    writable_folder(args.out, "--out")  # and where the report goes
    run_ids = [_analyse_in_run(arch, entry, settings, args, uri)
               for arch, entry in zip(args.arch, tqdm(entries, desc="nets", unit="net", disable=None))]
    report = _report(client, uri, args.experiment, Path(args.out), run_ids)
    print(report.read_text())
    return 0


def _analyse_in_run(arch: str, entry: ModelEntry, s: Settings, args: argparse.Namespace, uri: str) -> str:
    tracker = MlflowTracker(uri, args.experiment)
    with tracker.run(f"{arch}-analyze", _params(arch, entry, s), {**vars(args), "arch": arch}) as end:
        metrics = analyse(entry, s)
        tracker.log_metrics(metrics, step=0)
        end.reason = f"measured batch sizes {', '.join(map(str, s.batch_sizes))} and training steps"
    b, flops = s.batch_sizes[-1], metrics["flops_per_image"]
    log.info("%s (%s): %s M params, %s GFLOPs = %s GMACs per image; batch %d: %s ms median, %s images/s; "
             "training %s images/s; run %s", arch, entry.qualified_name, significant(metrics["num_params"] / 1e6),
             significant(flops / 1e9), significant(flops / 2e9), b,
             significant(metrics[at_batch_size("latency_median_ms", b)]),
             significant(metrics[at_batch_size("forward_images_per_sec", b)]),
             significant(metrics["train_step_images_per_sec"]), tracker.run_id)
    return tracker.run_id


def analyse(entry: ModelEntry, s: Settings) -> dict:
    """Every metric of one net: complexity, then forward passes at each batch size, then training steps."""
    num_params, flops = complexity(entry, NUM_CLASSES)
    model = create_model(entry.qualified_name, NUM_CLASSES, prefer="imagenet")
    model.to(s.device, memory_format=s.memory_format)
    runnable = torch.compile(model) if s.compile else model
    metrics = {"num_params": num_params, "flops_per_image": flops}
    for batch in s.batch_sizes:
        metrics.update(forward_series(runnable, s.images(batch, entry.input_size), s))
    metrics["train_step_images_per_sec"] = train_images_per_sec(runnable, model, entry.input_size, s)
    return metrics


@torch.inference_mode()
def forward_series(model: nn.Module, images: torch.Tensor, s: Settings) -> dict:
    """Latency, images/s and peak memory of forward passes over one batch, as ``<metric>_bs<batch>``."""
    model.eval()
    with s.autocast():
        for _ in range(s.warmup):
            model(images)
        reset_peak_memory(s.device)
        times = []
        for _ in range(s.iters):
            synchronize(s.device)
            started = time.perf_counter()
            model(images)
            synchronize(s.device)
            times.append(time.perf_counter() - started)
    batch, median = len(images), statistics.median(times)
    return {at_batch_size("latency_median_ms", batch): 1e3 * median,
            at_batch_size("latency_p95_ms", batch): 1e3 * float(np.percentile(times, 95)),
            at_batch_size("forward_images_per_sec", batch): batch / median,
            at_batch_size("forward_peak_mem_mib", batch): peak_memory_mib(s.device)}


def train_images_per_sec(runnable: nn.Module, model: nn.Module, size: int, s: Settings) -> float:
    """SGD steps on random labels: images / wall seconds over --iters steps after --warmup, synchronised at the edges."""
    images = s.images(s.train_batch_size, size)
    labels = torch.randint(0, NUM_CLASSES, (s.train_batch_size,), device=s.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=DEFAULTS.lr, momentum=DEFAULTS.momentum,
                                weight_decay=DEFAULTS.weight_decay)
    scaler = torch.amp.GradScaler(s.device.type, enabled=s.precision == "fp16")
    runnable.train()

    def step() -> None:
        with s.autocast():
            loss = F.cross_entropy(_logits(runnable(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(s.warmup):
        step()
    synchronize(s.device)
    started = time.perf_counter()
    for _ in range(s.iters):
        step()
    synchronize(s.device)
    return s.iters * s.train_batch_size / (time.perf_counter() - started)


def _logits(output) -> torch.Tensor:
    """Inception-v3 and GoogLeNet train with auxiliary heads and return (logits, aux...): the loss takes the logits."""
    return output[0] if isinstance(output, tuple) else output


def _params(arch: str, entry: ModelEntry, s: Settings) -> dict:
    return {
        "arch": arch, "arch_resolved": entry.qualified_name, "image_size": entry.input_size,
        "num_classes": NUM_CLASSES, "precision": s.precision, "channels_last": s.channels_last,
        "compile": s.compile, "batch_size": s.train_batch_size, "batch_sizes": ",".join(map(str, s.batch_sizes)),
        "warmup_iters": s.warmup, "timed_iters": s.iters, "framework": "pytorch", **environment_params(s.device),
    }


def _report(client, uri: str, experiment: str, out_dir: Path, run_ids: list[str]) -> Path:
    """The complexity report over the experiment's runs, written to ``out_dir`` and logged to this call's runs."""
    from train.studies.reports import complexity as complexity_report

    report = complexity_report.render(experiment_runs(uri, experiment), out_dir)
    for run_id in run_ids:
        for path in [report, *(out_dir / name for name in complexity_report.PLOTS.values())]:
            client.log_artifact(run_id, str(path), "complexity")
    return report


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description=__doc__, formatter_class=LaidOutHelp)
    p.add_argument("--arch", nargs="+", required=True,
                   help="ImageNet nets: torchvision, timm or reference names (cnnbench models lists them)")
    p.add_argument("--batch-sizes", type=pos_int, nargs="+", default=[1, 16],
                   help="inference batch sizes (default: 1 16)")
    p.add_argument("--train-batch-size", type=_at_least_two, default=16,
                   help="batch of the timed training steps; BatchNorm needs >= 2 (default: 16)")
    p.add_argument("--warmup", type=pos_int, default=5, help="untimed passes or steps before each series (default: 5)")
    p.add_argument("--iters", type=pos_int, default=30, help="timed passes or steps per series (default: 30)")
    p.add_argument("--compile", action="store_true", help="torch.compile each net (its warm-up includes compiling)")
    add_device_and_tracking_flags(p, out_help="where complexity.md and its plots go")
    return p


def _at_least_two(text: str) -> int:
    value = pos_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 2")
    return value
