"""Framework comparison on this machine: the three tasks of `cnnbench framework` on PyTorch, TensorFlow/Keras and
MXNet, each run in its own process, logged to an MLflow store and printed as the `frameworks` report (measured
figures beside the published ones). Prints figures; asserts nothing.

Every run uses the same threads, batch sizes, warm-up and timed steps; runs go framework after framework for each
task and format. Without --data-dir, vgg-cnn trains on a generated CIFAR-format set (tests/fakedata: a colour per
class, so its accuracy says nothing about CIFAR-10 and cannot be held against the study's).

  python benchmarks/frameworks.py                        # about 15 minutes on 2 shared CPU cores
  python benchmarks/frameworks.py --data-dir data --epochs 10 --steps 50 --threads 16 --store /tmp/fw
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from train.studies.frameworks.contract import DATA_FORMATS
from train.studies.frameworks.runner import FRAMEWORKS

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = "frameworks-benchmark"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder with cifar-10-batches-py (default: generate a CIFAR-format set)")
    p.add_argument("--generated-per-batch", type=int, default=400, help="generated set: images per training batch "
                   "file, 5 files (default: 400)")
    p.add_argument("--epochs", type=int, default=1, help="vgg-cnn epochs (default: 1)")
    p.add_argument("--steps", type=int, default=8, help="resnet50-* steps, warm-up included (default: 8)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--window-steps", type=int, default=3)
    p.add_argument("--train-batch-size", type=int, default=32, help="resnet50-train batch (default: 32)")
    p.add_argument("--infer-batch-size", type=int, default=32, help="resnet50-infer batch (default: 32)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every framework (default: 2)")
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--store", help="folder for the MLflow store and data (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(args.store or tmp)
        store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        data_dir = args.data_dir or generated_cifar(store / "data", args.generated_per_batch)
        for task, flags in jobs(args, data_dir):
            for framework in args.frameworks:
                run_job(framework, task, flags, args, uri)
        print(report(uri, store / "report"))


def generated_cifar(root: Path, per_batch: int) -> str:
    sys.path.insert(0, str(REPO))  # tests/ is not an installed package
    from tests.fakedata import write_cifar10

    return str(write_cifar10(root, train_per_batch=per_batch, test=per_batch))


def jobs(args, data_dir: str) -> list[tuple[str, list[str]]]:
    synthetic = ["--steps", str(args.steps), "--image-size", str(args.image_size)]
    return [
        ("vgg-cnn", ["--data-dir", data_dir, "--epochs", str(args.epochs)]),
        *(("resnet50-train", [*synthetic, "--batch-size", str(args.train_batch_size), "--data-format", fmt])
          for fmt in DATA_FORMATS),
        *(("resnet50-infer", [*synthetic, "--batch-size", str(args.infer_batch_size), "--data-format", fmt])
          for fmt in DATA_FORMATS),
    ]


def run_job(framework: str, task: str, flags: list[str], args, uri: str) -> None:
    cmd = [str(Path(sys.executable).with_name("cnnbench")), "framework", "--framework", framework, "--task", task,
           *flags, "--threads", str(args.threads), "--warmup-steps", str(args.warmup_steps),
           "--window-steps", str(args.window_steps), "--tracking-uri", uri, "--experiment", EXPERIMENT]
    print(f"{framework} {task} {' '.join(flags)}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:  # one framework's failure must not cost the others' figures
        print(f"  failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)


def report(uri: str, out_dir: Path) -> str:
    from train.studies.report import experiment_runs
    from train.studies.reports.frameworks import render

    return render(experiment_runs(uri, EXPERIMENT), out_dir).read_text()


if __name__ == "__main__":
    main()
