"""Training images/s on the fast path, through the engine and through a bare hand-written loop, with MFU.

The comparison is benchmarks/overhead.py's: the same model, initial weights, on-device synthetic batches,
threads, precision, memory format, compilation and SGD kernels; alternating engine/bare runs; the median of
the paired ratios (target >= 0.97). This front end picks the fast path for the device and adds MFU,
3 x forward FLOPs per image x images/s over the device's peak at the precision in use (train/engine/mfu.py: a GPU's
rated dense peak, a CPU's measured one, or --peak-tflops), and the step-time breakdown of the last engine run.

Defaults: with CUDA, ResNet-50 at 224x224, batch 256, bf16, channels-last, fused SGD, eager (add --compile);
without, resnet-20 at 32x32, batch 64, fp32 (ResNet-50 on a CPU takes seconds per step). Prints figures;
asserts nothing.

  python benchmarks/throughput.py                  # the defaults for this machine's device
  python benchmarks/throughput.py --compile        # the same, torch.compile'd
  python benchmarks/throughput.py --device cpu --arch resnet50 --image-size 224 --batch-size 16 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics

import torch
from overhead import Pairs, benchmark_parser, paired_runs, print_pairs, setting_line  # benchmarks/overhead.py

from train.engine.breakdown import PARTS
from train.engine.builders import AMP_DTYPES
from train.engine.distributed import pick_device
from train.engine.mfu import Peak, find_peaks, mfu_pct

FAST_PATH = {  # per device type: what benchmark_parser defaults to
    "cuda": {"arch": "resnet50", "image_size": 224, "batch_size": 256, "precision": "bf16", "channels_last": True},
    "cpu": {"arch": "resnet-20", "image_size": 32, "batch_size": 64, "precision": "fp32", "channels_last": False},
}


def parse_args() -> argparse.Namespace:
    """Defaults follow the device (--device, or this machine's): one parse for it, one for the rest."""
    device_only = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    device_only.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    device = pick_device(device_only.parse_known_args()[0].device)
    return benchmark_parser(__doc__, **FAST_PATH[device.type]).parse_args()


def print_mfu(pairs: Pairs, peak: Peak) -> None:
    flops = pairs.engine[-1]["flops_per_image"]
    engine, bare = statistics.median(pairs.engine_rates), statistics.median(pairs.bare)
    print(f"  MFU    : engine {mfu_pct(flops, engine, peak.tflops, 1):.1f} %, bare {mfu_pct(flops, bare, peak.tflops, 1):.1f} %"
          f"  (3 x {flops / 1e9:.2f} GFLOP/image; peak {peak.tflops:.3g} TFLOP/s, {peak.source})")


def print_breakdown(metrics: dict) -> None:
    parts = ", ".join(f"{part} {metrics[f'{part}_ms']:.2f}" for part in PARTS)
    total = sum(metrics[f"{part}_ms"] for part in PARTS)
    print(f"  step   : {metrics['step_time_ms']:.2f} ms (last engine run; {metrics['breakdown_steps']:.0f} sampled "
          f"steps: {parts}; parts sum to {total:.2f} ms)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # before the peak: on CPU it depends on the threads
    device = pick_device(args.device)
    # the engine's mfu_pct is over the same rated peak (the measured one on CPU), looked up again from the same facts
    peak = find_peaks(device, AMP_DTYPES[args.precision] or torch.float32, args.peak_tflops, None).rated
    pairs = paired_runs(args, device)
    print(f"\n{setting_line(args, device)}")
    print_pairs(pairs, target=0.97)
    print_mfu(pairs, peak)
    print_breakdown(pairs.engine[-1])


if __name__ == "__main__":
    main()
