"""Bianco et al. 2018's analysis on this machine: ``cnnbench analyze`` over the architectures of
train/reference/imagenet_architectures.csv that torchvision or timm implement (41 of 46; the other five are
refused with the reason, see UNAVAILABLE in train/models/_registry.py). Prints the Markdown table; the plots
and complexity.md go to --out, one MLflow run per net. Every flag but --only goes to `cnnbench analyze`.

  python benchmarks/complexity.py --device cuda --batch-sizes 1 2 4 8 16 32 64 --out reports/gpu
  python benchmarks/complexity.py --only AlexNet ResNet50 MobileNetV2 --threads 1 --iters 10   # a CPU sample
"""
from __future__ import annotations

import argparse

from train.engine.launch import exit_on_usage_error
from train.models import UNAVAILABLE
from train.studies import analyze
from train.studies.published import read_reference


def available_architectures() -> list[str]:
    return [row["model"] for row in read_reference("imagenet_architectures") if row["model"].lower() not in UNAVAILABLE]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="these architectures instead of all that are available")
    args, analyze_flags = p.parse_known_args()
    return analyze.main(["--arch", *(args.only or available_architectures()), *analyze_flags],
                        prog="benchmarks/complexity.py")


if __name__ == "__main__":
    exit_on_usage_error(main)
