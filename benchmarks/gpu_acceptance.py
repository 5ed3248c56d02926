"""Does this GPU node train as it should? Every gpu-marked test, then one table of the fast path, in one command.

On cuda:0, after the test suite's gpu-marked tests:
  - ResNet-50 224 px, synthetic batches of 256, bf16, channels-last, fused SGD (benchmarks/throughput.py's CUDA
    fast path): training images/s through the engine, eager and torch.compile'd, each beside a bare hand-written
    loop on the same GPU (benchmarks/overhead.py's alternating pairs; ratio engine / bare), with MFU and the
    step-time breakdown of the last engine run
  - a 1-process DDP job over NCCL through torchrun (launchers/ddp.py, as benchmarks/scaling.py runs it)
  - a short fp16 run with loss scaling
  - training steps, bf16 and fp16, under torch.cuda.set_sync_debug_mode("error"): a host synchronisation fails them
  - DALI's mixed (nvJPEG) decoder, images/s over generated JPEGs, when DALI is installed
  - peak memory of the engine's runs
The table goes to --out as gpu-acceptance.md and gpu-acceptance.json (with the tests' output in gpu-tests.log);
the exit status is 1 when a test or a check failed. Sized to finish within 8 minutes on one H100/H200 (an estimate:
the GPU path has not been run yet). Without a CUDA device it prints "skipped: no CUDA device" and exits 0.

  python benchmarks/gpu_acceptance.py
  python benchmarks/gpu_acceptance.py --out /scratch/acceptance --repeats 5

A node with only torch, torchvision and numpy, and no internet: fill a wheel folder where there is an index
(bash .ci/fill-wheels DIR --here), then on the node: bash .ci/setup --here --wheels DIR (README, "Installing").
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from loaders import loader_rate, write_jpegs  # benchmarks/loaders.py
from overhead import benchmark_config, benchmark_parser, engine_metrics, paired_runs  # benchmarks/overhead.py
from scaling import job_run  # benchmarks/scaling.py
from throughput import FAST_PATH  # benchmarks/throughput.py

from dataloaders import DataConfig, build_loaders
from train.context import DistContext
from train.engine import builders
from train.engine.breakdown import PARTS
from train.engine.config import OneLineErrorParser, pos_float, pos_int
from train.engine.environment import environment_params
from train.engine.mfu import find_peak, mfu_pct

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)


@dataclass
class Outcome:
    status: str  # ok | failed | skipped
    result: str
    detail: str  # how it was measured, or why it failed or was skipped
    figures: dict = field(default_factory=dict)  # the numbers, for the JSON


@dataclass
class Check:
    """One row of the table."""

    name: str
    outcome: Outcome


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineErrorParser(prog="benchmarks/gpu_acceptance.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-acceptance", help="folder for the table (default: ./gpu-acceptance)")
    p.add_argument("--steps", type=pos_int, default=30, help="timed steps of each ResNet-50 run")
    p.add_argument("--repeats", type=pos_int, default=3, help="eager engine/bare pairs")
    p.add_argument("--compile-repeats", type=pos_int, default=1, help="compiled engine/bare pairs")
    p.add_argument("--jpegs", type=pos_int, default=1024, help="JPEGs the DALI decoder reads per pass")
    p.add_argument("--peak-tflops", type=pos_float, help="the GPU's bf16 peak for MFU (default: measured)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    checks = [attempt("gpu-marked tests", lambda: gpu_tests(out / "gpu-tests.log")),
              attempt("ResNet-50 bf16, eager", lambda: engine_beside_bare(args, compiled=False)),
              attempt("ResNet-50 bf16, compiled", lambda: engine_beside_bare(args, compiled=True))]
    checks += [Check("peak memory", peak_memory(checks)),
               attempt("DDP, 1 process, NCCL (torchrun)", lambda: ddp_over_nccl(args)),
               attempt("fp16 with loss scaling", lambda: fp16_run(args)),
               attempt('steps under set_sync_debug_mode("error")', lambda: steps_without_sync(args)),
               attempt("DALI mixed decoder", lambda: dali_mixed(args))]
    write_table(out, checks, time.perf_counter() - started)
    return 1 if any(c.outcome.status == "failed" for c in checks) else 0


def attempt(name: str, check: Callable[[], Outcome]) -> Check:
    """The check's row; one that raises becomes a failed row, and the other checks still run."""
    print(f"gpu acceptance: {name} ...", file=sys.stderr, flush=True)
    try:
        return Check(name, check())
    except Exception as err:  # the table reports every failure, whatever it is
        traceback.print_exc()
        return Check(name, Outcome("failed", type(err).__name__, last_words(err)))


def last_words(err: Exception) -> str:
    """What a failed subprocess last said (torchrun closes with a frame of '='), else the error's first line."""
    said = getattr(err, "stderr", None) or b""
    text = said.decode(errors="replace") if isinstance(said, bytes) else said
    worded = [line for line in text.splitlines() if any(c.isalpha() for c in line)]
    return worded[-1] if worded else (str(err).splitlines() or [""])[0]


# --- the gpu-marked tests ---

def gpu_tests(log: Path) -> Outcome:
    """``pytest -m gpu`` over the test files that hold gpu-marked tests (the others may need the test extras)."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", *files],
                          cwd=REPO, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    skips = sorted({line.split(": ", 1)[-1] for line in lines if line.startswith("SKIPPED")})
    return Outcome("ok" if proc.returncode == 0 else "failed",
                   lines[-1].strip("= ") if lines else f"pytest exited {proc.returncode}",
                   f"{len(files)} test files; skipped: {'; '.join(skips) or 'none'}; output in {log}",
                   {"exit_code": proc.returncode})


# --- ResNet-50 on the fast path, engine beside the bare loop ---

def fast_path_args(args, **overrides) -> argparse.Namespace:
    """benchmarks/throughput.py's CUDA fast path in benchmarks/overhead.py's flags, with these changes."""
    settings = benchmark_parser(__doc__, **FAST_PATH["cuda"]).parse_args(
        ["--steps", str(args.steps), "--device", "cuda"])
    return argparse.Namespace(**{**vars(settings), "peak_tflops": args.peak_tflops, **overrides})


def engine_beside_bare(args, compiled: bool) -> Outcome:
    peak = find_peak(CUDA, torch.bfloat16, args.peak_tflops, None)  # measured once, then cached
    settings = fast_path_args(args, compile=compiled, peak_tflops=peak.tflops,
                              repeats=args.compile_repeats if compiled else args.repeats)
    pairs = paired_runs(settings, CUDA)
    engine, bare, ratios = statistics.median(pairs.engine_rates), statistics.median(pairs.bare), pairs.ratios
    last = pairs.engine[-1]
    mfu = mfu_pct(last["flops_per_image"], engine, peak.tflops, 1)
    parts = ", ".join(f"{part} {last[f'{part}_ms']:.1f}" for part in PARTS)
    return Outcome("ok", f"{engine:.0f} images/s, bare loop {bare:.0f}: ratio {statistics.median(ratios):.3f}; "
                         f"MFU {mfu:.1f} %",
                   f"median of {settings.repeats} alternating pairs (ratios {ratios[0]:.3f} .. {ratios[-1]:.3f}; "
                   f"target >= 0.97); step {last['step_time_ms']:.1f} ms: {parts} ms; peak {peak.tflops:.0f} "
                   f"TFLOP/s ({peak.source})",
                   {"engine_images_per_sec": engine, "bare_images_per_sec": bare, "ratios": ratios, "mfu_pct": mfu,
                    "peak_tflops": peak.tflops, "step_time_ms": last["step_time_ms"],
                    **{f"{part}_ms": last[f"{part}_ms"] for part in PARTS}, "peak_mem_mib": last["peak_mem_mib"]})


def peak_memory(checks: list[Check]) -> Outcome:
    """The engine's peak_mem_mib (torch.cuda.max_memory_allocated) of the ResNet-50 rows."""
    measured = {c.name: c.outcome.figures["peak_mem_mib"] for c in checks if "peak_mem_mib" in c.outcome.figures}
    if not measured:
        return Outcome("skipped", "-", "no ResNet-50 run finished")
    return Outcome("ok", ", ".join(f"{mib:.0f} MiB" for mib in measured.values()),
                   f"torch.cuda.max_memory_allocated in the engine's runs: {', '.join(measured)}",
                   {"peak_mem_mib": measured})


# --- DDP, fp16, host synchronisation ---

def ddp_over_nccl(args) -> Outcome:
    # the earlier runs' models, and the memory torch keeps cached for them, would stay reserved beside the job's
    # process on the same GPU
    gc.collect()
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as store:
        run = job_run(1, fast_path_args(args, epochs=1), store, "gpu-acceptance-ddp")
    backend, rate = run.data.params["backend"], run.data.metrics["train_images_per_sec"]
    return Outcome("ok" if backend == "nccl" and run.info.status == "FINISHED" else "failed", f"{rate:.0f} images/s",
                   f"launchers/ddp.py under python -m torch.distributed.run: backend {backend}, world size "
                   f"{run.data.params['world_size']}, run {run.info.status}", {"images_per_sec": rate})


def fp16_run(args) -> Outcome:
    settings = fast_path_args(args, precision="fp16", steps=max(10, args.steps // 2))
    with tempfile.TemporaryDirectory() as store:
        metrics = engine_metrics(benchmark_config(settings, CUDA, store), DistContext(device=CUDA, launcher="single"))
    rate, loss, skipped = metrics["train_images_per_sec"], metrics["train_loss"], metrics["amp_skipped_steps"]
    return Outcome("ok" if math.isfinite(loss) else "failed", f"{rate:.0f} images/s, train loss {loss:.3f}",
                   f"{settings.warmup} + {settings.steps} steps; the grad scaler skipped {skipped:.0f} "
                   f"(inf/NaN gradients while it finds its scale)",
                   {"images_per_sec": rate, "train_loss": loss, "skipped_steps": skipped})


def steps_without_sync(args) -> Outcome:
    warmup, steps = 3, 10
    for precision in ("bf16", "fp16"):
        sync_free_steps(fast_path_args(args, precision=precision, steps=warmup + steps), warmup, steps)
    return Outcome("ok", f"bf16 and fp16: {steps} steps each, none synchronised",
                   f"the engine's training step (fused SGD; fp16: the loss scaler) after {warmup} warm-up steps")


def sync_free_steps(settings, warmup: int, steps: int) -> None:
    """Training steps as the engine takes them, with any host synchronisation an error (raised by torch)."""
    with tempfile.TemporaryDirectory() as store:
        cfg = benchmark_config(settings, CUDA, store)
    torch.manual_seed(0)
    loaders = build_loaders(cfg.data, DistContext(device=CUDA, launcher="single"))
    model, _ = builders.build_model(cfg, loaders.spec)
    model.to(CUDA, memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    step = builders.Step(model, builders.build_optimizer(model, cfg, 1, CUDA), scaler,
                         builders.autocast(cfg.precision, CUDA))
    batches = iter(loaders.train)
    for images, labels in itertools.islice(batches, warmup):  # lazy initialisation may synchronise
        step(images, labels)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for images, labels in itertools.islice(batches, steps):
            step(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# --- DALI ---

def dali_mixed(args) -> Outcome:
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        return Outcome("skipped", "-", "DALI is not installed (pip install -e '.[dali]')")
    passes, warmup, batch = 5, 2, 128
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(Path(root), args.jpegs, classes=10)
        cfg = DataConfig(dataset="imagenet", data_dir=root, loader="dali", batch_size=batch, loader_threads=4)
        loader = build_loaders(cfg, DistContext(device=CUDA)).train
        rates = [loader_rate(loader, epoch, warmup, CUDA) for epoch in range(passes)]
    rate = statistics.median(rates)
    return Outcome("ok", f"{rate:.0f} images/s",
                   f"training pipeline (RandomResizedCrop 224, flip, normalise) over {args.jpegs} JPEGs ~500x375, "
                   f"batch {batch}, 4 CPU threads; median of {passes} passes, {warmup} batches left out of each",
                   {"images_per_sec": rate, "passes": rates})


# --- the table ---

def write_table(out: Path, checks: list[Check], seconds: float) -> None:
    env = environment_params(CUDA)
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    (out / "gpu-acceptance.json").write_text(json.dumps(
        {"when": when, "seconds": round(seconds, 1), "environment": env, "checks": [asdict(c) for c in checks]},
        indent=2) + "\n")
    lines = [f"# GPU acceptance: {env['device_name']}", "",
             f"{when}, {seconds:.0f} s; torch {env['torch_version']} (CUDA {env['cuda_version']}, cuDNN "
             f"{env['cudnn_version']}), torchvision {env['torchvision_version']}, Python {env['python_version']}, "
             f"cnnbench {env['git_sha'][:12]}; host {env['hostname']}", "",
             "| check | status | result | how, or why not |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cell(text) for text in (c.name, c.outcome.status, c.outcome.result, c.outcome.detail))
              + " |" for c in checks]
    (out / "gpu-acceptance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[2:]))
    print(f"\nwritten: {out / 'gpu-acceptance.md'}, {out / 'gpu-acceptance.json'}")


def cell(text: str) -> str:
    """Text that stays inside its Markdown table cell."""
    return text.replace("\n", " ").replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
