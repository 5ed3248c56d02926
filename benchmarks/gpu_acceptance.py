"""Does this GPU node train as it should? Every gpu-marked test, then one table of the fast path, in one command.

Each row of the table states its pass criterion and fails when it is not met (benchmarks/acceptance_criteria.py
holds them, with their sources); on cuda:0:
  gpu-marked tests       pytest -m gpu over the test files that have them: exits 0
  ResNet-50 bf16, eager  224 px, synthetic batches of 256, channels-last, fused SGD (benchmarks/throughput.py's CUDA
  ... and compiled       fast path), through the engine beside a bare hand-written loop in alternating pairs:
                         engine/bare >= 0.97, and engine images/s > 2470, what one A100 80GB trained at with AMP
                         (NVIDIA DeepLearningExamples, ResNet-50 v1.5 for PyTorch); with MFU and step breakdown
  peak memory            the engine's torch.cuda.max_memory_allocated of those runs: > 0 and < the card's memory
  energy                 the engine's energy_per_image_j: > 0, and the timed images' energy <= the card's power
                         limit x their seconds; n/a, with the reason, where the engine logs none
  DDP over NCCL          a 1-process torchrun job (launchers/ddp.py): backend nccl, run FINISHED
  fp16 with loss scaling 3 epochs: skipped steps <= 10 % of the steps, and the last epoch's loss < the first's
  steps without sync     bf16 and fp16 steps under torch.cuda.set_sync_debug_mode("error"): none synchronises
  DALI mixed decoder     generated JPEGs, nvJPEG (mixed) against DALI's CPU decoder on the same files, same threads:
                         mixed faster; labels equal; images within a mean |difference| of 2 of 255 levels
The table (check, status, criterion, result, seconds, how) goes to --out as gpu-acceptance.md and
gpu-acceptance.json (the tests' output in gpu-tests.log); the exit status is 1 when a row failed.

Time: every row measures once, whatever that costs (a criterion is never left out); the repeats asked for
(--repeats, --compile-repeats, --dali-passes) run after that while one more fits in --budget-s (default 480 s),
and each row says how many ran and their seconds. Its GPU path has not run yet: no GPU was available where it was
written, so the default budget is an estimate.

Where the machine has no NVIDIA GPU (no nvidia-smi, or NVML, that lists one) it prints "skipped: no CUDA device"
and exits 0. Where it has one that torch cannot use (a CUDA build of torch newer than the driver, a CPU build,
CUDA_VISIBLE_DEVICES) it prints one line saying why and exits 1.

  python benchmarks/gpu_acceptance.py
  python benchmarks/gpu_acceptance.py --out /scratch/acceptance --repeats 5 --budget-s 900

Setting a node up for it (pytest, and the DALI build of torch's CUDA major): bash .ci/setup --gpu, or into the
node's own torch bash .ci/setup --gpu --here; without internet, a wheel folder from bash .ci/fill-wheels
(docs/install.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pynvml
import torch
from acceptance_criteria import (  # benchmarks/acceptance_criteria.py
    A100_RESNET50_AMP,
    Budget,
    Phase,
    Verdict,
    dali_verdict,
    ddp_verdict,
    energy_verdict,
    fp16_verdict,
    memory_verdict,
    nvidia_gpus,
    resnet50_verdict,
    gpu_tests_verdict,
    unseen_gpus_line,
)
from loaders import loader_rate, write_jpegs  # benchmarks/loaders.py
from mlflow import MlflowClient
from overhead import Pairs, benchmark_config, benchmark_parser, paired_runs  # benchmarks/overhead.py
from throughput import FAST_PATH  # benchmarks/throughput.py

from dataloaders import DataConfig, build_loaders
from train.context import DistContext
from train.engine import builders, loop
from train.engine.breakdown import PARTS
from train.engine.config import OneLineErrorParser, pos_float, pos_int
from train.engine.distributed import SingleProcess
from train.engine.environment import environment_params
from train.studies.scaling import run_job

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@dataclass
class Outcome:
    status: str  # ok | failed | skipped | n/a
    criterion: str  # what passing means
    result: str
    detail: str  # how it was measured, or why it failed or was skipped
    figures: dict = field(default_factory=dict)  # the numbers, for the JSON

    @classmethod
    def judged(cls, verdict: Verdict, result: str, detail: str, figures: dict | None = None) -> Outcome:
        return cls(verdict.status, verdict.criterion, result, detail, figures or {})


@dataclass
class Check:
    """One row of the table."""

    name: str
    outcome: Outcome
    seconds: str = "-"  # of its measurements, and how many of the repeats asked for ran


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineErrorParser(prog="benchmarks/gpu_acceptance.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-acceptance", help="folder for the table (default: ./gpu-acceptance)")
    p.add_argument("--steps", type=pos_int, default=30, help="timed steps of each ResNet-50 run")
    p.add_argument("--repeats", type=pos_int, default=3, help="eager engine/bare pairs asked for")
    p.add_argument("--compile-repeats", type=pos_int, default=1, help="compiled engine/bare pairs asked for")
    p.add_argument("--jpegs", type=pos_int, default=2048, help="JPEGs each DALI pass reads")
    p.add_argument("--dali-passes", type=pos_int, default=3, help="mixed/CPU pairs of DALI passes asked for")
    p.add_argument("--budget-s", type=pos_float, default=480.0,
                   help="seconds the repeats beyond each row's first must fit in (default: 480)")
    p.add_argument("--min-images-per-sec", type=pos_float, default=A100_RESNET50_AMP,
                   help="the ResNet-50 rows' floor (default: 2470, one A100 80GB with AMP): for a smaller card")
    p.add_argument("--peak-tflops", type=pos_float, help="the GPU's bf16 peak for MFU (default: the engine's)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        gpus = nvidia_gpus()
        if not gpus:
            print("skipped: no CUDA device")
            return 0
        print(unseen_gpus_line(gpus, torch.__version__, torch.version.cuda, os.environ.get("CUDA_VISIBLE_DEVICES")))
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    eager = Phase("ResNet-50 bf16, eager", lambda: one_pair(args, compiled=False), args.repeats)
    compiled = Phase("ResNet-50 bf16, compiled", lambda: one_pair(args, compiled=True), args.compile_repeats)
    judged = [(Phase("gpu-marked tests", lambda: gpu_tests(out / "gpu-tests.log")), tests_row),
              (eager, lambda runs: resnet50_row(args, runs)), (compiled, lambda runs: resnet50_row(args, runs)),
              (Phase("DDP, 1 process, NCCL (torchrun)", lambda: ddp_over_nccl(args)), ddp_row),
              (Phase("fp16 with loss scaling", lambda: fp16_run(args)), fp16_row),
              (Phase('steps under set_sync_debug_mode("error")', lambda: steps_without_sync(args)), sync_row),
              (Phase("DALI mixed decoder", DaliPasses(args.jpegs), args.dali_passes), dali_row)]
    budget = Budget(args.budget_s)
    budget.run([phase for phase, _ in judged])
    checks = [row(phase, judge) for phase, judge in judged]
    checks[3:3] = [Check("peak memory", peak_memory([eager, compiled])), Check("energy", energy(args, eager))]
    write_table(out, checks, budget)
    return 1 if any(c.outcome.status == "failed" for c in checks) else 0


def row(phase: Phase, judge: Callable[[list], Outcome]) -> Check:
    """A phase's row: its verdict on what it measured, or how it failed; its seconds, and repeats left out."""
    ran = f"{sum(phase.seconds):.0f}"
    if phase.wanted > 1:
        ran += f" ({len(phase.seconds)} of {phase.wanted} runs{': budget' if phase.trimmed else ''})"
    if phase.error is not None:
        return Check(phase.name, Outcome("failed", "runs to its end", type(phase.error).__name__,
                                         last_words(phase.error)), ran)
    return Check(phase.name, judge(phase.runs), ran)


def last_words(err: Exception) -> str:
    """What a failed subprocess last said (torchrun closes with a frame of '='), else the error's first line."""
    said = getattr(err, "stderr", None) or b""
    text = said.decode(errors="replace") if isinstance(said, bytes) else said
    worded = [line for line in text.splitlines() if any(c.isalpha() for c in line)]
    return worded[-1] if worded else (str(err).splitlines() or [""])[0]


# --- the gpu-marked tests ---

def gpu_tests(log: Path) -> dict:
    """``pytest -m gpu`` over the test files that hold gpu-marked tests (the others may need the test extras)."""
    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError("pytest is not installed here: bash .ci/setup --gpu (docs/install.md) installs it")
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", *files],
                          cwd=REPO, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    return {"exit_code": proc.returncode, "files": len(files), "log": str(log),
            "summary": lines[-1].strip("= ") if lines else f"pytest exited {proc.returncode}",
            "skips": sorted({line.split(": ", 1)[-1] for line in lines if line.startswith("SKIPPED")})}


def tests_row(runs: list[dict]) -> Outcome:
    (run,) = runs
    return Outcome.judged(gpu_tests_verdict(run["exit_code"]), run["summary"],
                          f"{run['files']} test files; skipped: {'; '.join(run['skips']) or 'none'}; "
                          f"output in {run['log']}", {"exit_code": run["exit_code"]})


# --- ResNet-50 on the fast path, engine beside the bare loop ---

def fast_path_args(args, **overrides) -> argparse.Namespace:
    """benchmarks/throughput.py's CUDA fast path in benchmarks/overhead.py's flags, with these changes."""
    settings = benchmark_parser(__doc__, **FAST_PATH["cuda"]).parse_args(
        ["--steps", str(args.steps), "--device", "cuda"])
    return argparse.Namespace(**{**vars(settings), "peak_tflops": args.peak_tflops, **overrides})


def one_pair(args, compiled: bool) -> Pairs:
    """One engine run and the bare run right after it."""
    return paired_runs(fast_path_args(args, compile=compiled, repeats=1), CUDA)


def resnet50_row(args, runs: list[Pairs]) -> Outcome:
    pairs = Pairs([m for p in runs for m in p.engine], [r for p in runs for r in p.bare])
    engine, bare, ratios = statistics.median(pairs.engine_rates), statistics.median(pairs.bare), pairs.ratios
    ratio, last = statistics.median(ratios), pairs.engine[-1]
    mfu = last["mfu_pct"]  # as the engine logs it: one definition (docs/measurement.md)
    parts = ", ".join(f"{part} {last[f'{part}_ms']:.1f}" for part in PARTS)
    return Outcome.judged(
        resnet50_verdict(ratio, engine, args.min_images_per_sec),
        f"{engine:.0f} images/s, bare loop {bare:.0f}: ratio {ratio:.3f}; MFU {mfu:.1f} % (last run)",
        f"median of {len(ratios)} alternating pairs (ratios {ratios[0]:.3f} .. {ratios[-1]:.3f}); step "
        f"{last['step_time_ms']:.1f} ms: {parts} ms",
        {"engine_images_per_sec": engine, "bare_images_per_sec": bare, "ratios": ratios, "mfu_pct": mfu,
         "step_time_ms": last["step_time_ms"], **{f"{p}_ms": last[f"{p}_ms"] for p in PARTS},
         "peak_mem_mib": [m["peak_mem_mib"] for m in pairs.engine]})


def peak_memory(phases: list[Phase]) -> Outcome:
    """The engine's peak_mem_mib (torch.cuda.max_memory_allocated) of the ResNet-50 runs."""
    measured = {p.name: [m["peak_mem_mib"] for pairs in p.runs for m in pairs.engine] for p in phases}
    peaks = [mib for mibs in measured.values() for mib in mibs]
    card = torch.cuda.get_device_properties(CUDA).total_memory / 2**20
    return Outcome.judged(memory_verdict(peaks, card), ", ".join(f"{mib:.0f} MiB" for mib in peaks) or "-",
                          f"torch.cuda.max_memory_allocated in the engine's runs: "
                          f"{', '.join(name for name, mibs in measured.items() if mibs) or 'none finished'}",
                          {"peak_mem_mib": measured, "card_mib": card})


def energy(args, eager: Phase) -> Outcome:
    """The engine's energy per image in the eager runs, against what the card may draw in their timed seconds."""
    runs = [m for pairs in eager.runs for m in pairs.engine]
    joules = [m.get("energy_per_image_j", math.nan) for m in runs]
    if not runs or not all(math.isfinite(j) for j in joules):
        why = "no eager ResNet-50 run finished" if not runs else \
            "the engine logged no energy_per_image_j (no NVML energy counter on this GPU or this build)"
        return Outcome("n/a", "0 < energy <= power limit x timed seconds", "-", why)
    limit = power_limit_w(CUDA)
    if limit is None:
        return Outcome("n/a", "0 < energy <= power limit x timed seconds", f"{max(joules):.3f} J/image",
                       "NVML gives no enforced power limit for this GPU")
    images = args.steps * FAST_PATH["cuda"]["batch_size"]
    seconds = [images / m["train_images_per_sec"] for m in runs]
    verdicts = [energy_verdict(j, images, s, limit) for j, s in zip(joules, seconds)]
    worst = max(range(len(runs)), key=lambda i: joules[i] / seconds[i])
    return Outcome.judged(([v for v in verdicts if not v.ok] or verdicts)[0],
                          f"{statistics.median(joules):.3f} J/image, {joules[worst] * images / seconds[worst]:.0f} W "
                          f"at most", f"energy_per_image_j of {len(runs)} eager engine runs, {images} timed images "
                          f"each; NVML's enforced power limit {limit:.0f} W",
                          {"energy_per_image_j": joules, "power_limit_w": limit})


def power_limit_w(device: torch.device) -> float | None:
    """NVML's enforced power limit of the GPU torch calls ``device`` (found by UUID: NVML numbers GPUs its own way)."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(device).uuid}")
        return pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


# --- DDP, fp16, host synchronisation ---

def ddp_over_nccl(args):
    # the earlier runs' models, and the memory torch keeps cached for them, would stay reserved beside the job's
    # process on the same GPU
    gc.collect()
    torch.cuda.empty_cache()
    job, experiment = fast_path_args(args, epochs=1), "gpu-acceptance-ddp"
    with tempfile.TemporaryDirectory() as store:
        uri = f"sqlite:///{store}/mlflow.db"
        run_job("ddp", 1, [
            "--arch", job.arch, "--dataset", "synthetic", "--image-size", str(job.image_size), "--num-classes", "10",
            "--batch-size", str(job.batch_size), "--steps", str(job.warmup + job.steps), "--epochs", "1",
            "--schedule", "constant", "--warmup-steps", str(job.warmup), "--window-steps", str(max(1, job.steps // 4)),
            "--precision", job.precision, "--device", "cuda", "--tracking-uri", uri, "--experiment", experiment,
            "--checkpoint-dir", f"{store}/ckpt", "--no-system-metrics", *["--channels-last"] * job.channels_last])
        client = MlflowClient(uri)
        return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1)[0]


def ddp_row(runs) -> Outcome:
    (run,) = runs
    backend, rate = run.data.params["backend"], run.data.metrics["train_images_per_sec"]
    return Outcome.judged(ddp_verdict(backend, run.info.status),
                          f"{rate:.0f} images/s", f"launchers/ddp.py under python -m torch.distributed.run: backend "
                          f"{backend}, world size {run.data.params['world_size']}, run {run.info.status}",
                          {"images_per_sec": rate})


FP16_EPOCHS = 3  # over the synthetic loader's few batches, served again each epoch: a loss that can fall


def fp16_run(args) -> dict:
    settings = fast_path_args(args, precision="fp16", steps=max(10, args.steps // 2))
    with tempfile.TemporaryDirectory() as store:
        cfg = dataclasses.replace(benchmark_config(settings, CUDA, store), epochs=FP16_EPOCHS)
        summary = loop.run(cfg, SingleProcess(DistContext(device=CUDA, launcher="single")))
        history = MlflowClient(summary.tracking_uri).get_metric_history
        per_epoch = {name: [m.value for m in sorted(history(summary.run_id, name), key=lambda m: m.step)]
                     for name in ("train_loss", "amp_skipped_steps")}
    return {"steps": FP16_EPOCHS * (settings.warmup + settings.steps), "rate": summary.metrics["train_images_per_sec"],
            "losses": per_epoch["train_loss"], "skipped": sum(per_epoch["amp_skipped_steps"])}


def fp16_row(runs: list[dict]) -> Outcome:
    (run,) = runs
    losses = run["losses"]
    return Outcome.judged(fp16_verdict(run["skipped"], run["steps"], losses),
                          f"{run['rate']:.0f} images/s; train loss {' -> '.join(f'{x:.3f}' for x in losses)}; "
                          f"{run['skipped']:.0f} steps skipped",
                          f"{FP16_EPOCHS} epochs, {run['steps']} steps in all; skipped: the grad scaler's inf/NaN "
                          f"steps (amp_skipped_steps)", run)


SYNC_WARMUP, SYNC_STEPS = 3, 10


def steps_without_sync(args) -> None:
    for precision in ("bf16", "fp16"):
        sync_free_steps(fast_path_args(args, precision=precision, steps=SYNC_WARMUP + SYNC_STEPS))


def sync_row(runs) -> Outcome:
    return Outcome("ok", "no host synchronisation (torch raises on one)",
                   f"bf16 and fp16: {SYNC_STEPS} steps each, none synchronised",
                   f"the engine's training step (fused SGD; fp16: the loss scaler) after {SYNC_WARMUP} warm-up steps")


def sync_free_steps(settings) -> None:
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
    for images, labels in itertools.islice(batches, SYNC_WARMUP):  # lazy initialisation may synchronise
        step(images, labels)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for images, labels in itertools.islice(batches, SYNC_STEPS):
            step(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# --- DALI ---

DALI_BATCH, DALI_WARMUP, DALI_THREADS, CLASSES = 64, 2, 4, 10


class DaliPasses:
    """Each call: one pass of the mixed (nvJPEG) pipeline and one of DALI's CPU pipeline over the same JPEGs; the
    first also compares their validation batches (deterministic: resize and centre crop), image by image."""

    def __init__(self, jpegs: int):
        self.jpegs, self.folder = jpegs, None

    def __call__(self) -> dict:
        if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
            return {"installed": False}
        first = self.folder is None
        if first:
            self.folder = tempfile.TemporaryDirectory(prefix="cnnbench-jpegs-")  # removed when the process ends
            write_jpegs(Path(self.folder.name), self.jpegs, classes=CLASSES)
        cfg = DataConfig(dataset="imagenet", data_dir=self.folder.name, loader="dali", batch_size=DALI_BATCH,
                         loader_threads=DALI_THREADS)
        mixed, cpu = (build_loaders(cfg, DistContext(device=device)) for device in (CUDA, CPU))
        figures = {"installed": True, "jpegs": self.jpegs, "mixed": loader_rate(mixed.train, 0, DALI_WARMUP, CUDA),
                   "cpu": loader_rate(cpu.train, 0, DALI_WARMUP, CPU)}
        if first:
            figures.update(compare_batches(mixed.val, cpu.val, mixed.spec.std))
        return figures


def compare_batches(mixed, cpu, std) -> dict:
    """Whether the two loaders' labels are equal, and the largest mean |difference| of an image, in 0-255 levels."""
    to_levels = 255 * torch.tensor(std).view(1, 3, 1, 1)  # normalised (x / 255 - mean) / std back to levels
    labels_equal, worst = True, 0.0
    for (a, la), (b, lb) in zip(mixed, cpu, strict=True):
        labels_equal &= torch.equal(la.cpu(), lb.cpu())
        worst = max(worst, ((a.float().cpu() - b.float()).abs() * to_levels).mean(dim=(1, 2, 3)).max().item())
    return {"labels_equal": labels_equal, "worst_mean_abs_levels": worst}


def dali_row(runs: list[dict]) -> Outcome:
    if not runs[0]["installed"]:
        return Outcome("skipped", "mixed faster than CPU, same batches", "-",
                       "DALI is not installed (bash .ci/setup --gpu installs the build for torch's CUDA)")
    mixed, cpu = statistics.median(r["mixed"] for r in runs), statistics.median(r["cpu"] for r in runs)
    first = runs[0]
    labels, levels = first["labels_equal"], first["worst_mean_abs_levels"]
    return Outcome.judged(dali_verdict(mixed, cpu, labels, levels),
                          f"mixed {mixed:.0f} images/s, CPU {cpu:.0f}; labels {'equal' if labels else 'differ'}; "
                          f"images differ by a mean of {levels:.2f} levels at most",
                          f"training pipeline (RandomResizedCrop 224, flip, normalise) over {first['jpegs']} JPEGs "
                          f"~500x375, batch {DALI_BATCH}, {DALI_THREADS} threads; median of {len(runs)} pairs of "
                          f"passes, {DALI_WARMUP} batches left out of each; compared: the validation pipeline's batches",
                          {"mixed": [r["mixed"] for r in runs], "cpu": [r["cpu"] for r in runs],
                           "labels_equal": labels, "worst_mean_abs_levels": levels})


# --- the table ---

def write_table(out: Path, checks: list[Check], budget: Budget) -> None:
    env = environment_params(CUDA)
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    seconds = budget.used()
    (out / "gpu-acceptance.json").write_text(json.dumps(
        {"when": when, "seconds": round(seconds, 1), "budget_s": budget.seconds, "environment": env,
         "checks": [asdict(c) for c in checks]}, indent=2, default=str) + "\n")
    lines = [f"# GPU acceptance: {env['device_name']}", "",
             f"{when}, {seconds:.0f} s (budget {budget.seconds:.0f} s); torch {env['torch_version']} (CUDA "
             f"{env['cuda_version']}, cuDNN {env['cudnn_version']}), torchvision {env['torchvision_version']}, "
             f"Python {env['python_version']}, cnnbench {env['git_sha'][:12]}; host {env['hostname']}", "",
             "| check | status | criterion | result | seconds | how, or why not |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cell(text) for text in (c.name, c.outcome.status, c.outcome.criterion,
                                                       c.outcome.result, c.seconds, c.outcome.detail)) + " |"
              for c in checks]
    (out / "gpu-acceptance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[2:]))
    print(f"\nwritten: {out / 'gpu-acceptance.md'}, {out / 'gpu-acceptance.json'}")


def cell(text: str) -> str:
    """Text that stays inside its Markdown table cell."""
    return text.replace("\n", " ").replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
