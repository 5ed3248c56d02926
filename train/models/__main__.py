"""List the model registry: ``python -m train.models [PATTERN] [--dataset cifar10] [--format csv]``."""
from __future__ import annotations

import argparse
import csv
import sys

from tqdm import tqdm

from train.config import OneLineErrorParser
from train.models import list_models, parameter_count

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000}


def main(argv: list[str] | None = None, prog: str = "python -m train.models") -> int:
    args = _parser(prog).parse_args(argv)
    sources = ("cifar", "torchvision", "timm") if args.source == "all" else tuple(args.source.split(","))
    entries = list_models(args.pattern, sources)
    num_classes = NUM_CLASSES[args.dataset]
    # timm nets take ~0.2 s each to build, even on the meta device: show progress for long listings
    counted = [(e, parameter_count(e, num_classes)) for e in tqdm(entries, desc="counting parameters",
                                                                   disable=None if len(entries) > 50 else True)]
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["name", "params"])
        writer.writerows((e.name, n) for e, n in counted)
        return 0
    print(f"{'name':<28} {'source':<12} {'input':>5} {'params (M)':>11}   ({args.dataset}, {num_classes} classes)")
    for e, n in counted:
        print(f"{e.name:<28} {e.source:<12} {e.input_size:>5} {n / 1e6:>11.2f}   {e.summary}")
    return 0


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description="List every --arch name with its parameter count.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnet*' (default: all)")
    p.add_argument("--dataset", choices=tuple(NUM_CLASSES), default="cifar10",
                   help="count parameters for this data set's number of classes (default: cifar10)")
    p.add_argument("--source", default="cifar,torchvision",
                   choices=("cifar", "torchvision", "timm", "cifar,torchvision", "all"),
                   help="which libraries to list; timm adds ~1,300 nets and takes minutes (default: cifar,torchvision)")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    return p


if __name__ == "__main__":
    from train.cli import exit_on_usage_error

    exit_on_usage_error(main)
