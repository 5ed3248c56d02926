"""Data-parallel scaling: `cnnbench scaling` (train/studies/scaling.py) on synthetic data, 1 against N processes.

Each point is a real `torchrun --nproc_per_node=P launchers/ddp.py` job (gloo on CPU, the cores divided among the
processes; NCCL on GPUs), same model, same per-process batch, same steps per rank, logged to a temporary MLflow
store; jobs alternate (1, N, 1, N, ...) so the machine's drift hits both. Prints the images/s and efficiency of
each world size with 95 % intervals and the step-time split. Asserts nothing.

  python benchmarks/scaling.py                                    # resnet-20 32x32, batch 32, 1 vs 2 CPU processes
  python benchmarks/scaling.py --device cuda --procs 8 --arch resnet50 --image-size 224 --batch-size 256 \\
      --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import tempfile

from train.studies import scaling


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet-20")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--procs", type=int, default=2, help="processes of the scaled job (against 1)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per rank per epoch")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per epoch before them")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="jobs per world size")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as store:
        job = ["--arch", args.arch, "--dataset", "synthetic", "--image-size", str(args.image_size), "--num-classes",
               "10", "--batch-size", str(args.batch_size), "--steps", str(args.warmup + args.steps),
               "--epochs", str(args.epochs), "--schedule", "constant", "--warmup-steps", str(args.warmup),
               "--window-steps", str(max(1, args.steps // 4)), "--precision", args.precision,
               "--device", args.device, "--checkpoint-dir", f"{store}/ckpt", *["--channels-last"] * args.channels_last]
        scaling.main(["--world-sizes", "1", str(args.procs), "--repeats", str(args.repeats), "--experiment", "scaling",
                      "--tracking-uri", f"sqlite:///{store}/mlflow.db", "--", *job])


if __name__ == "__main__":
    main()
