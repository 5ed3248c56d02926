"""List the model registry: ``python -m train.models [PATTERN] [--dataset cifar10] [--format csv]``."""
from __future__ import annotations

import argparse
import csv
import fnmatch
import sys

from tqdm import tqdm

from train.engine.config import OneLineErrorParser
from train.models import UNAVAILABLE, complexity, list_models, parameter_count

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000}


def main(argv: list[str] | None = None, prog: str = "python -m train.models") -> int:
    args = _parser(prog).parse_args(argv)
    sources = ("cifar", "torchvision", "timm") if args.source == "all" else tuple(args.source.split(","))
    entries = list_models(args.pattern, sources)
    num_classes = NUM_CLASSES[args.dataset]
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["name", "params"])
        writer.writerows((e.name, parameter_count(e, num_classes)) for e in _progress(entries, "counting parameters"))
        return 0
    counted = [(e, *complexity(e, num_classes)) for e in _progress(entries, "counting parameters and FLOPs")]
    print(f"{'name':<28} {'source':<12} {'input':>5} {'params (M)':>11} {'GFLOPs':>8} {'GMACs':>8}   "
          f"({args.dataset}, {num_classes} classes; forward, one image at the input size; MAC = 2 FLOPs)")
    for e, n, flops in counted:
        print(f"{e.name:<28} {e.source:<12} {e.input_size:>5} {n / 1e6:>11.2f} {flops / 1e9:>8.3f} "
              f"{flops / 2e9:>8.3f}   {e.summary}")
    _print_unavailable(args.pattern)
    return 0


def _progress(entries: list, desc: str):
    """timm nets take ~0.2 s each to build, even on the meta device: show progress for long listings."""
    return tqdm(entries, desc=desc, disable=None if len(entries) > 50 else True)


def _print_unavailable(pattern: str) -> None:
    names = [n for n in UNAVAILABLE if fnmatch.fnmatch(n, pattern.lower())]
    if names:
        print("\nnamed in the reference studies, but not available:")
    for name in names:
        print(f"  {name:<26} {UNAVAILABLE[name]}")


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description="List every --arch name with its source library, native input "
                           "size, parameters and forward FLOPs (table), or name and parameters (csv).")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnet*' (default: all)")
    p.add_argument("--dataset", choices=tuple(NUM_CLASSES), default="cifar10",
                   help="count parameters for this data set's number of classes (default: cifar10)")
    p.add_argument("--source", default="cifar,torchvision",
                   choices=("cifar", "torchvision", "timm", "cifar,torchvision", "all"),
                   help="which libraries to list; timm adds ~1,300 nets and takes minutes (default: cifar,torchvision)")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    return p


if __name__ == "__main__":
    from train.engine.launch import exit_on_usage_error

    exit_on_usage_error(main)
