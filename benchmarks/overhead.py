"""What the engine costs: its training images/s against a bare hand-written PyTorch loop, in one run.

Both train the same model from the same initial weights on the same on-device synthetic batches, with
the same threads, precision, memory format, compilation, SGD kernels, warm-up and number of timed steps,
synchronising only at the edges of the timed span. Runs alternate (engine, bare, engine, bare, ...) so
drifts of the machine hit both alike; the figure is the median over pairs of the engine/bare ratio, with
its range, which tells how much of the difference is the machine's noise. Prints figures; asserts nothing.
benchmarks/throughput.py is the same comparison on the fast path, with MFU.

  python benchmarks/overhead.py                       # resnet-20, batch 64, CPU: about 3 minutes on 2 cores
  python benchmarks/overhead.py --arch resnet50 --image-size 224 --batch-size 256 --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dataloaders import build_loaders
from train.context import DistContext
from train.engine import builders, loop
from train.engine.config import make_config
from train.engine.distributed import SingleProcess, pick_device
from train.engine.environment import device_name, git_sha
from train.engine.measure import synchronize


def benchmark_config(args, device: torch.device, store: str):
    """One epoch of (warm-up + timed steps) synthetic batches; the warm-up is what the engine leaves out."""
    return make_config(
        arch=args.arch, dataset="synthetic", image_size=args.image_size, num_classes=args.num_classes,
        synthetic_train_size=(args.warmup + args.steps) * args.batch_size, synthetic_val_size=args.batch_size,
        batch_size=args.batch_size, epochs=1, schedule="constant", precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode,
        peak_tflops=args.peak_tflops, warmup_steps=args.warmup, window_steps=args.steps,
        tracking_uri=f"sqlite:///{store}/mlflow.db", checkpoint_dir=f"{store}/ckpt", experiment="overhead",
        device=str(device.type))


def engine_metrics(cfg, ctx: DistContext) -> dict:
    return loop.run(cfg, SingleProcess(ctx)).metrics


def bare_rate(cfg, ctx: DistContext) -> float:
    """The loop a user would write by hand, on the model and batches the engine's own builders make."""
    device = ctx.device
    torch.manual_seed(cfg.data.seed)
    loaders = build_loaders(cfg.data, ctx)
    model, _ = builders.build_model(cfg, loaders.spec)
    fmt = torch.channels_last if cfg.data.channels_last else torch.preserve_format
    model.to(device, memory_format=fmt).train()
    opt = builders.build_optimizer(model, cfg, 1, device)  # the same SGD kernels (fused on CUDA)
    torch.backends.cudnn.benchmark = True
    if cfg.compile:
        model = torch.compile(model, mode=cfg.compile_mode)
    dtype = builders.AMP_DTYPES[cfg.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    start = None
    for i, (images, labels) in enumerate(loaders.train):
        if i == cfg.warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        with autocast():
            loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    synchronize(device)
    return (len(loaders.train) - cfg.warmup_steps) * cfg.data.batch_size / (time.perf_counter() - start)


@dataclass
class Pairs:
    """Alternating runs: engine run i is paired with the bare run right after it (the same machine state)."""

    engine: list[dict]  # each engine run's metrics
    bare: list[float]  # images/s

    @property
    def engine_rates(self) -> list[float]:
        return [m["train_images_per_sec"] for m in self.engine]

    @property
    def ratios(self) -> list[float]:
        return sorted(e / b for e, b in zip(self.engine_rates, self.bare))


def paired_runs(args, device: torch.device) -> Pairs:
    ctx = DistContext(device=device, launcher="single")
    pairs = Pairs([], [])
    with tempfile.TemporaryDirectory() as store:
        cfg = benchmark_config(args, device, store)
        for _ in range(args.repeats):
            pairs.engine.append(engine_metrics(cfg, ctx))
            pairs.bare.append(bare_rate(cfg, ctx))
    return pairs


def benchmark_parser(description: str, arch: str = "resnet-20", image_size: int = 32, batch_size: int = 64,
                     precision: str = "fp32", channels_last: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=arch)
    p.add_argument("--image-size", type=int, default=image_size)
    p.add_argument("--num-classes", type=int, default=10 if image_size <= 64 else 1000)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--steps", type=int, default=40, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=7, help="engine/bare pairs")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=precision)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=channels_last)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), default="default")
    p.add_argument("--peak-tflops", type=float, default=None, help="the engine's MFU peak (default: measured, cached)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p


def setting_line(args, device: torch.device) -> str:
    return (f"{args.arch} {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.precision}"
            f"{', channels-last' if args.channels_last else ''}"
            f"{f', compiled ({args.compile_mode})' if args.compile else ', eager'}; {device_name(device)}, "
            f"{torch.get_num_threads()} threads; torch {torch.__version__}; cnnbench {git_sha()[:12]}\n"
            f"{args.warmup} warm-up + {args.steps} timed steps per run, median of {args.repeats} alternating runs")


def print_pairs(pairs: Pairs, target: float) -> None:
    ratios = pairs.ratios
    print(f"  engine : {statistics.median(pairs.engine_rates):10.1f} images/s   "
          f"runs: {', '.join(f'{r:.1f}' for r in pairs.engine_rates)}")
    print(f"  bare   : {statistics.median(pairs.bare):10.1f} images/s   runs: {', '.join(f'{r:.1f}' for r in pairs.bare)}")
    print(f"  ratio engine / bare, median of paired runs = {statistics.median(ratios):.3f}  "
          f"(pairs {ratios[0]:.3f} .. {ratios[-1]:.3f}; target >= {target})")


def main() -> None:
    args = benchmark_parser(__doc__).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    pairs = paired_runs(args, device)
    print(f"\n{setting_line(args, device)}")
    print_pairs(pairs, target=0.98)


if __name__ == "__main__":
    main()
