"""Data-parallel scaling: the job's training images/s with 1 and with N processes, and the per-rank efficiency.

Each point is a real `torchrun --nproc_per_node=P launchers/ddp.py` job on synthetic data (gloo on CPU, one
thread per process; NCCL on GPUs), same model, same per-process batch, same steps per rank, logged to a
temporary MLflow store from which the figures are read back. Runs alternate (1, N, 1, N, ...) so the
machine's drift hits both; efficiency = rate(N) / (N * rate(1)) per pair, median and range printed.
Prints figures; asserts nothing.

  python benchmarks/scaling.py                                    # resnet-20 32x32, batch 32, 1 vs 2 CPU processes
  python benchmarks/scaling.py --device cuda --procs 8 --arch resnet50 --image-size 224 --batch-size 256 \\
      --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def job_rate(procs: int, args, store: str, experiment: str) -> float:
    """images/s of the last epoch of one torchrun job, read back from its MLflow run."""
    return job_run(procs, args, store, experiment).data.metrics["train_images_per_sec"]


def job_run(procs: int, args, store: str, experiment: str):
    """Run one torchrun job and read its MLflow run back."""
    from mlflow import MlflowClient

    steps = args.warmup + args.steps
    # torchrun as a module: its script need not sit beside this Python (containers put it in /usr/local/bin)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           str(REPO / "launchers" / "ddp.py"), "--arch", args.arch, "--dataset", "synthetic",
           "--image-size", str(args.image_size), "--num-classes", "10", "--batch-size", str(args.batch_size),
           "--synthetic-train-size", str(procs * steps * args.batch_size), "--synthetic-val-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--schedule", "constant", "--warmup-steps", str(args.warmup),
           "--window-steps", str(max(1, args.steps // 4)), "--precision", args.precision, "--device", args.device,
           "--tracking-uri", f"sqlite:///{store}/mlflow.db", "--checkpoint-dir", f"{store}/ckpt",
           "--experiment", experiment,
           "--no-system-metrics"]  # on by default for multi-process jobs only: both points must do the same work
    if args.device == "cpu":
        cmd += ["--threads", "1"]
    if args.channels_last:
        cmd.append("--channels-last")
    subprocess.run(cmd, check=True, cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              order_by=["attributes.start_time DESC"], max_results=1)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet-20")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--procs", type=int, default=2, help="processes of the scaled job (against 1)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per rank per epoch")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per epoch before them")
    p.add_argument("--epochs", type=int, default=2, help="the last epoch's figure is used")
    p.add_argument("--repeats", type=int, default=3, help="(1, N) pairs")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args()

    one, many = [], []
    with tempfile.TemporaryDirectory() as store:
        for repeat in range(args.repeats):
            one.append(job_rate(1, args, store, "scaling-1"))
            many.append(job_rate(args.procs, args, store, f"scaling-{args.procs}"))
            print(f"  pair {repeat + 1}: 1 process {one[-1]:.1f} images/s, {args.procs} processes {many[-1]:.1f}",
                  file=sys.stderr)
    efficiency = sorted(m / (args.procs * o) for o, m in zip(one, many))
    print(f"\n{args.arch} {args.image_size}x{args.image_size}, batch {args.batch_size} per process, {args.precision}"
          f"{', channels-last' if args.channels_last else ''}, {args.device}"
          f"{' (gloo, 1 thread per process)' if args.device == 'cpu' else ''}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per rank, last of {args.epochs} epochs")
    print(f"  1 process   : {statistics.median(one):9.1f} images/s   runs: {', '.join(f'{r:.1f}' for r in one)}")
    print(f"  {args.procs} processes : {statistics.median(many):9.1f} images/s   runs: "
          f"{', '.join(f'{r:.1f}' for r in many)}   ({statistics.median(many) / args.procs:.1f} per worker)")
    print(f"  scaling efficiency per rank, median of pairs = {statistics.median(efficiency):.3f}  "
          f"(pairs {efficiency[0]:.3f} .. {efficiency[-1]:.3f}; target >= 0.9)")


if __name__ == "__main__":
    main()
