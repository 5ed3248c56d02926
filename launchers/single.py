"""Single-process training on one device: this machine's GPU if CUDA is there, else the CPU.

  python launchers/single.py                                  # resnet-20 on digits, 5 epochs, sqlite MLflow
  python launchers/single.py --arch resnet-164 --recipe resnet-110 --dataset cifar10 --data-dir data
  python launchers/single.py --arch resnet50 --dataset synthetic --precision bf16 --channels-last

This launcher only picks the device and calls the engine; every flag below is the engine's.
"""
from __future__ import annotations

from train.context import DistContext
from train.engine.distributed import SingleProcess, pick_device
from train.engine.launch import exit_on_usage_error, resolve_config, train_and_report, training_parser


def main(argv: list[str] | None = None, prog: str = "launchers/single.py") -> int:
    args = training_parser(prog, __doc__).parse_args(argv)
    cfg, checkpoint = resolve_config(args)
    ctx = DistContext(device=pick_device(cfg.device), launcher="single")
    return train_and_report(cfg, SingleProcess(ctx), checkpoint)


if __name__ == "__main__":
    exit_on_usage_error(main)
