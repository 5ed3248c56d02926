"""What the engine costs: its training images/s against a bare hand-written PyTorch loop, in one run.

Both train the same model from the same initial weights on the same on-device synthetic batches, with
the same threads, warm-up and number of timed steps, synchronising only at the edges of the timed
span. Runs alternate (engine, bare, engine, bare, ...) so drifts of the machine hit both alike; the
figure is the median over pairs of the engine/bare ratio, with its range, which tells how much of the
difference is the machine's noise. Prints figures; asserts nothing.

  python benchmarks/overhead.py                       # resnet-20, batch 64, CPU: about 3 minutes on 2 cores
  python benchmarks/overhead.py --arch resnet50 --image-size 224 --batch-size 256 --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from dataloaders import build_loaders
from train import engine
from train.config import make_config
from train.distributed import DistContext, SingleProcess, pick_device
from train.environment import device_name, git_sha
from train.measure import synchronize


def benchmark_config(args, device: torch.device, store: str):
    """One epoch of (warm-up + timed steps) synthetic batches; the warm-up is what the engine leaves out."""
    return make_config(
        arch=args.arch, dataset="synthetic", image_size=args.image_size, num_classes=args.num_classes,
        synthetic_train_size=(args.warmup + args.steps) * args.batch_size, synthetic_val_size=args.batch_size,
        batch_size=args.batch_size, epochs=1, schedule="constant", precision=args.precision,
        channels_last=args.channels_last, warmup_steps=args.warmup, window_steps=args.steps,
        tracking_uri=f"sqlite:///{store}/mlflow.db", checkpoint_dir=f"{store}/ckpt", experiment="overhead",
        device=str(device.type))


def engine_rate(cfg, ctx: DistContext) -> float:
    return engine.run(cfg, SingleProcess(ctx)).metrics["train_images_per_sec"]


def bare_rate(cfg, ctx: DistContext) -> float:
    """The loop a user would write by hand, on the model and batches the engine's own builders make."""
    device = ctx.device
    torch.manual_seed(cfg.data.seed)
    loaders = build_loaders(cfg.data, ctx)
    model, _ = engine.build_model(cfg, loaders.spec)
    fmt = torch.channels_last if cfg.data.channels_last else torch.preserve_format
    model.to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    dtype = engine.AMP_DTYPES[cfg.precision]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet-20")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=40, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=7, help="engine/bare pairs")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    ctx = DistContext(device=device, launcher="single")
    engine_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory() as store:
        cfg = benchmark_config(args, device, store)
        for _ in range(args.repeats):
            engine_rates.append(engine_rate(cfg, ctx))
            bare_rates.append(bare_rate(cfg, ctx))
    e, b = statistics.median(engine_rates), statistics.median(bare_rates)
    # each engine run is paired with the bare run right after it: the pair saw the same machine state
    ratios = sorted(er / br for er, br in zip(engine_rates, bare_rates))
    print(f"\n{args.arch} {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.precision}"
          f"{', channels-last' if args.channels_last else ''}; {device_name(device)}, "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}; cnnbench {git_sha()[:12]}")
    print(f"{args.warmup} warm-up + {args.steps} timed steps per run, median of {args.repeats} alternating runs")
    print(f"  engine : {e:10.1f} images/s   runs: {', '.join(f'{r:.1f}' for r in engine_rates)}")
    print(f"  bare   : {b:10.1f} images/s   runs: {', '.join(f'{r:.1f}' for r in bare_rates)}")
    print(f"  ratio engine / bare, median of paired runs = {statistics.median(ratios):.3f}  "
          f"(pairs {ratios[0]:.3f} .. {ratios[-1]:.3f}; target >= 0.98)")


if __name__ == "__main__":
    main()
