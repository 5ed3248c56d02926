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

from train import engine
from train.config import make_config
from train.distributed import DistContext, SingleProcess, pick_device
from train.environment import device_name, git_sha
from train.measure import synchronize
from train.models import create_model


def engine_rate(args, device: torch.device, store: str) -> float:
    """Train images/s of one engine epoch: (warm-up + timed steps) batches, warm-up excluded by the engine."""
    cfg = make_config(
        arch=args.arch, dataset="synthetic", image_size=args.image_size, num_classes=args.num_classes,
        synthetic_train_size=(args.warmup + args.steps) * args.batch_size, synthetic_val_size=args.batch_size,
        batch_size=args.batch_size, epochs=1, schedule="constant", precision=args.precision,
        channels_last=args.channels_last, warmup_steps=args.warmup, window_steps=args.steps,
        tracking_uri=f"sqlite:///{store}/mlflow.db", checkpoint_dir=f"{store}/ckpt", experiment="overhead",
        device=str(device.type))
    summary = engine.run(cfg, SingleProcess(DistContext(device=device, launcher="single")))
    return summary.metrics["train_images_per_sec"]


def bare_rate(args, device: torch.device) -> float:
    """The loop a user would write by hand: same model, data, optimiser and autocast as the engine."""
    torch.manual_seed(0)
    prefer = "cifar" if args.image_size <= 64 else "imagenet"  # the engine's rule (engine.build_model)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = create_model(args.arch, args.num_classes, prefer=prefer).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator(device).manual_seed(0)
    pool = 4 * args.batch_size
    images = torch.empty(pool, 3, args.image_size, args.image_size, device=device,
                         memory_format=fmt).normal_(generator=gen)
    labels = torch.randint(args.num_classes, (pool,), generator=gen, device=device)
    dtype = engine.AMP_DTYPES[args.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    def step(i: int) -> None:
        s = (i % 4) * args.batch_size
        with autocast():
            loss = F.cross_entropy(model(images[s:s + args.batch_size]), labels[s:s + args.batch_size])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for i in range(args.warmup):
        step(i)
    synchronize(device)
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


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

    engine_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory() as store:
        for _ in range(args.repeats):
            engine_rates.append(engine_rate(args, device, store))
            bare_rates.append(bare_rate(args, device))
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
