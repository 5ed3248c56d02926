"""Training-data throughput: the DALI CPU pipeline against torchvision's DataLoader, then the loader against the model.

Both loaders are the project's own (``--loader dali`` and ``--loader torch`` on ``--dataset imagenet``), with the
same training transforms (RandomResizedCrop 224 + flip + normalise to float32), batch size, and CPU parallelism
(--workers DataLoader processes, as many DALI threads). They read an ImageNet-like folder made once into
--cache-dir: smooth random colour fields with noise, ~500x375 JPEGs about as large as ImageNet's.
Passes alternate (dali, torch, dali, torch, ...) so drifts of the machine hit both alike; the first --warmup
batches of a pass are left out (pipeline build, worker start-up). Prints the images/s of each pass, their medians,
and the median and range of the per-pair ratios dali / torch. Then the model's own training rate for --arch on
synthetic 224x224 batches (benchmarks/overhead.py's bare loop), and which of loader and model limits training.
Prints figures; asserts nothing. The load averages it prints tell whether other work shared the cores (the
benchmark alone keeps about workers + 1 of them busy).

  python benchmarks/loaders.py --cache-dir /tmp/cnnbench-jpegs            # 18 min on 2 shared cores: JPEGs + resnet50
  python benchmarks/loaders.py --cache-dir /tmp/cnnbench-jpegs --workers 8 --arch resnet50 --batch-size 128
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from overhead import bare_rate  # benchmarks/overhead.py: a hand-written training loop, nothing around it
from PIL import Image

from dataloaders import DataConfig, build_loaders
from train.context import DistContext
from train.engine.config import make_config
from train.engine.environment import cpu_name, git_sha
from train.studies.diagnose import loader_rate as pass_rate

STAMP = "cnnbench-jpegs.json"  # what the cache holds: regenerated when a different folder is asked for


def write_jpegs(root: Path, images: int, classes: int, seed: int = 0) -> None:
    """``root/{train,val}/<class>/*.jpg``: ``images`` training JPEGs ~500x375 (2 per class for val), made once."""
    recipe = {"images": images, "classes": classes, "seed": seed}
    stamp = root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", 2 * classes)):
        for i in range(count):
            folder = root / split / f"class_{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            photo_like(rng).save(folder / f"{i:06d}.jpg", quality=90)
    stamp.write_text(json.dumps(recipe))


def photo_like(rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field (a 6x8 grid, bicubically enlarged) with noise: photos' mix of large areas and
    fine texture. Noise of sd 20 makes ~95 KiB files at quality 90, near ImageNet's mean of ~110 KB per JPEG."""
    width, height = int(rng.integers(450, 551)), int(rng.integers(330, 421))
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(field) + noise, 0, 255).astype(np.uint8))


def loader_rate(loader, epoch: int, warmup: int, device: torch.device,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Images/s of one pass over ``loader``: the clock starts once its first ``warmup`` batches have arrived, and
    only the batches that arrive after that count."""
    loader.set_epoch(epoch)
    if len(loader) <= warmup:
        raise ValueError(f"a pass of {len(loader)} batches leaves none to time after {warmup} warm-up batches")
    return pass_rate(loader, len(loader), warmup, device, clock)


def model_rate(args, num_classes: int, device: torch.device) -> float:
    """Training images/s of --arch alone: synthetic 224x224 batches already on the device."""
    cfg = make_config(arch=args.arch, dataset="synthetic", image_size=224, num_classes=num_classes,
                      synthetic_train_size=(args.model_warmup + args.model_steps) * args.batch_size,
                      synthetic_val_size=args.batch_size, batch_size=args.batch_size, warmup_steps=args.model_warmup)
    return bare_rate(cfg, DistContext(device=device))


def verdict(loader: float, model: float) -> str:
    if loader < model:
        return f"the loader limits training (it feeds {loader / model:.2f}x what the model takes)"
    return f"the model limits training (the loader could feed {loader / model:.1f}x what it takes)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-dir", required=True, help="where the JPEG folder is made once and reused")
    p.add_argument("--images", type=int, default=3000, help="training JPEGs in the folder")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes = DALI CPU threads")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=5, help="batches left out at the start of each loader pass")
    p.add_argument("--repeats", type=int, default=3, help="dali/torch pairs of passes over the folder")
    p.add_argument("--arch", default="resnet50", help="the model whose training rate the loaders are held against")
    p.add_argument("--model-steps", type=int, default=3, help="timed training steps of --arch")
    p.add_argument("--model-warmup", type=int, default=1, help="untimed training steps of --arch before them")
    args = p.parse_args()

    root = Path(args.cache_dir)
    write_jpegs(root, args.images, args.classes)
    load_before = os.getloadavg()[0]
    cpu = DistContext()
    loaders = {name: build_loaders(DataConfig(dataset="imagenet", data_dir=str(root), loader=name,
                                              batch_size=args.batch_size, workers=args.workers,
                                              loader_threads=args.workers), cpu).train
               for name in ("dali", "torch")}
    rates = {name: [] for name in loaders}
    for epoch in range(args.repeats):
        for name, loader in loaders.items():
            rates[name].append(loader_rate(loader, epoch, args.warmup, cpu.device))
    gpu = torch.device("cuda", 0) if torch.cuda.is_available() else None
    mixed = _mixed_rate(args, root, gpu)
    model = model_rate(args, args.classes, gpu or cpu.device)

    kilobytes = np.mean([f.stat().st_size for f in (root / "train").rglob("*.jpg")]) / 1024
    print(f"\n{args.images} JPEGs ~500x375 ({kilobytes:.0f} KiB on average) in {root}; batch {args.batch_size}; "
          f"{args.workers} DataLoader workers = {args.workers} DALI threads")
    print(f"{cpu_name()}, {os.cpu_count()} cores, 1-minute load average {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after; torch {torch.__version__}; DALI {_dali_version()}; "
          f"cnnbench {git_sha()[:12]}")
    print(f"training transforms, {args.warmup} warm-up batches left out per pass, {args.repeats} alternating pairs")
    for name, passes in rates.items():
        print(f"  {name:5s} loader : {statistics.median(passes):8.1f} images/s   passes: {_listing(passes)}")
    ratios = sorted(d / t for d, t in zip(rates["dali"], rates["torch"]))
    print(f"  ratio dali / torch, median of paired passes = {statistics.median(ratios):.2f}  "
          f"(pairs {ratios[0]:.2f} .. {ratios[-1]:.2f}; target >= 1.8)")
    print(f"  dali mixed (GPU) decoder : {mixed}")
    print(f"\n{args.arch} trains at {model:.1f} images/s on {gpu or 'the CPU'} (batch {args.batch_size}, "
          f"{args.model_warmup} warm-up + {args.model_steps} timed steps)")
    for name, passes in rates.items():
        print(f"  {name:5s} loader: {verdict(statistics.median(passes), model)}")
    if gpu is None:
        print("  (measured one after the other: in training on a CPU, loader and model share the same cores)")


def _listing(rates: list[float]) -> str:
    return ", ".join(f"{r:.1f}" for r in rates)


def _mixed_rate(args, root: Path, gpu: torch.device | None) -> str:
    if gpu is None:
        return "not measured: no CUDA device on this machine"
    cfg = DataConfig(dataset="imagenet", data_dir=str(root), loader="dali", batch_size=args.batch_size,
                     loader_threads=args.workers)
    loader = build_loaders(cfg, DistContext(device=gpu)).train
    rates = [loader_rate(loader, epoch, args.warmup, gpu) for epoch in range(args.repeats)]
    return f"{statistics.median(rates):.1f} images/s   passes: {_listing(rates)}"


def _dali_version() -> str:
    from nvidia.dali import __version__

    return __version__


if __name__ == "__main__":
    main()
