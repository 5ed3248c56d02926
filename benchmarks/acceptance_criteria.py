"""What benchmarks/gpu_acceptance.py holds a GPU node to, as pure functions of what it measured: the driver each
torch CUDA build needs, each row's pass criterion, and the time budget. Nothing here needs a GPU (nor torch): the
tests feed every criterion measurements that meet it and measurements that miss it.
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import pynvml

# The oldest Linux x86_64 driver each CUDA major runs on (CUDA minor version compatibility). NVIDIA, "CUDA
# Compatibility: Minor Version Compatibility", Table 1 (docs.nvidia.com/deploy/cuda-compatibility/
# minor-version-compatibility.html): CUDA 13.x >= 580, 12.x >= 525, 11.x >= 450; the exact 12.x and 11.x releases
# from the CUDA Toolkit Release Notes' table of minimum drivers for minor version compatibility.
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}

RATIO_FLOOR = 0.97  # engine images/s over the bare hand-written loop's, same GPU, alternating pairs
# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance: NVIDIA
# DGX A100 (8x A100 80GB)": 2470 img/s on 1 GPU with mixed precision (pytorch-21.03 NGC container; ImageNet through
# DALI). A newer GPU on synthetic batches already on it should beat an A100 reading JPEGs.
A100_RESNET50_AMP = 2470.0
A100_SOURCE = "1x A100 80GB, AMP, NVIDIA DeepLearningExamples ResNet-50 v1.5"
FP16_MAX_SKIPPED_SHARE = 0.1  # the grad scaler halves its scale per skip: a few while it settles, not a tenth
# nvJPEG and libjpeg-turbo round the inverse DCT and chroma upsampling differently: a level or so per pixel
DALI_MAX_MEAN_ABS_LEVELS = 2.0


def driver_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def needed_driver(torch_cuda: str) -> str | None:
    """The oldest driver a torch built for CUDA ``torch_cuda`` ("13.0") runs on; None for a major not in the table."""
    return MIN_DRIVER.get(int(torch_cuda.split(".")[0]))


def unseen_gpus_line(gpus: list[tuple[str, str]], torch_version: str, torch_cuda: str | None,
                     visible_devices: str | None) -> str:
    """One line for a machine whose NVIDIA GPUs (name, driver) torch cannot use: what it has, what this torch needs,
    and the way out."""
    names = sorted({name for name, _ in gpus})
    driver = gpus[0][1]
    seen = f"{len(gpus)} NVIDIA GPU(s) ({', '.join(names)}) with driver {driver}"
    if torch_cuda is None:
        why = f"torch {torch_version} is a CPU-only build (torch.version.cuda is None)"
    elif (needed := needed_driver(torch_cuda)) is None:
        why = f"torch {torch_version} is built for CUDA {torch_cuda}, whose minimum driver is not in this table"
    elif driver_tuple(driver) < driver_tuple(needed):
        why = f"torch {torch_version} is built for CUDA {torch_cuda}, which needs driver >= {needed}"
    else:
        hidden = f"CUDA_VISIBLE_DEVICES={visible_devices!r} hides them; " if visible_devices is not None else ""
        why = (f"torch {torch_version} is built for CUDA {torch_cuda} (driver >= {needed}: met), yet "
               f"torch.cuda.is_available() is False: {hidden}see the warning torch printed")
    return (f"failed: this machine has {seen}, but torch cannot use them: {why}. Install cnnbench into the node's own "
            f"CUDA torch (bash .ci/setup --gpu --here) or a torch built for this driver: docs/install.md")


def nvidia_gpus() -> list[tuple[str, str]]:
    """The NVIDIA GPUs of this machine as (name, driver), whatever torch sees: nvidia-smi's answer where it is on
    PATH (none where it fails: no device, no driver loaded), else NVML's."""
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=60)
        return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no NVIDIA driver library: no NVIDIA GPU either
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        return [(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)), driver)
                for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def parse_nvidia_smi(csv: str) -> list[tuple[str, str]]:
    """``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`` -> [(name, driver)]."""
    return [tuple(part.strip() for part in line.rsplit(",", 1)) for line in csv.splitlines() if "," in line]


# --- each row's criterion ---

@dataclass(frozen=True)
class Verdict:
    ok: bool
    criterion: str  # what passing means, as the table states it

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


def all_of(*verdicts: Verdict) -> Verdict:
    return Verdict(all(v.ok for v in verdicts), "; ".join(v.criterion for v in verdicts))


def gpu_tests_verdict(exit_code: int) -> Verdict:
    return Verdict(exit_code == 0, "pytest -m gpu exits 0")


def ddp_verdict(backend: str, status: str) -> Verdict:
    """The job trained over NCCL, to its end (a gloo fallback would also finish)."""
    return Verdict(backend == "nccl" and status == "FINISHED", "backend nccl, run FINISHED")


def resnet50_verdict(ratio: float, images_per_sec: float, floor: float) -> Verdict:
    """The engine keeps up with a bare loop, and the GPU trains ResNet-50 faster than an A100 did."""
    return all_of(Verdict(ratio >= RATIO_FLOOR, f"engine/bare >= {RATIO_FLOOR}"),
                  Verdict(images_per_sec > floor, f"> {floor:.0f} images/s ({A100_SOURCE}: {A100_RESNET50_AMP:.0f})"))


def fp16_verdict(skipped: float, steps: int, epoch_losses: list[float]) -> Verdict:
    """The loss scaler let nearly every step through, and training went somewhere (an fp32 loss under autocast stays
    finite even when every step is skipped)."""
    return all_of(Verdict(skipped <= FP16_MAX_SKIPPED_SHARE * steps,
                          f"skipped steps <= {FP16_MAX_SKIPPED_SHARE:.0%} of {steps}"),
                  Verdict(len(epoch_losses) >= 2 and epoch_losses[-1] < epoch_losses[0],
                          "last epoch's train loss < first epoch's"))


def dali_verdict(mixed_rate: float, cpu_rate: float, labels_equal: bool, worst_mean_abs_levels: float) -> Verdict:
    """The GPU decoder earns its place: faster than DALI's CPU decoder on the same files, and the same batches."""
    return all_of(Verdict(mixed_rate > cpu_rate, "mixed decoder images/s > CPU decoder's"),
                  Verdict(labels_equal, "labels equal"),
                  Verdict(worst_mean_abs_levels <= DALI_MAX_MEAN_ABS_LEVELS,
                          f"images equal within a mean |difference| of {DALI_MAX_MEAN_ABS_LEVELS} of 255 levels"))


def memory_verdict(peaks_mib: list[float], card_mib: float) -> Verdict:
    """Memory was measured (0 means nothing was), and within what the card has."""
    return Verdict(bool(peaks_mib) and all(0 < peak < card_mib for peak in peaks_mib),
                   f"0 < peak < the card's {card_mib:.0f} MiB")


def energy_verdict(joules_per_image: float, images: int, seconds: float, power_limit_w: float) -> Verdict:
    """Energy was measured, and no more than the card may draw: power limit x the timed seconds."""
    return Verdict(0 < joules_per_image and joules_per_image * images <= power_limit_w * seconds,
                   f"0 < energy <= power limit {power_limit_w:.0f} W x timed seconds")


# --- the time budget ---

def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Phase:
    """One row's measurements: ``measure`` gives one repeat's; ``wanted`` repeats are asked for."""

    name: str
    measure: Callable[[], object]
    wanted: int = 1
    runs: list = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    error: Exception | None = None

    @property
    def trimmed(self) -> bool:
        return self.error is None and len(self.runs) < self.wanted


class Budget:
    """``--budget-s``: every row measures once, whatever that costs, since a criterion is never left out; the
    repeats asked for beyond the first run while one more, taking the mean time of the row's earlier ones, ends
    within the budget."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock, self.start = seconds, clock, clock()

    def used(self) -> float:
        return self.clock() - self.start

    def fits(self, seconds: float) -> bool:
        return self.used() + seconds <= self.seconds

    def run(self, phases: list[Phase], report: Callable[[str], None] = to_stderr) -> None:
        for phase in phases:
            self._once(phase, report)
        for phase in phases:
            while phase.trimmed and self.fits(statistics.mean(phase.seconds)):
                self._once(phase, report)

    def _once(self, phase: Phase, report: Callable[[str], None]) -> None:
        start = self.clock()
        try:
            phase.runs.append(phase.measure())
        except Exception as err:  # the row reports it as failed; the other rows still run
            traceback.print_exc()
            phase.error = err
        phase.seconds.append(self.clock() - start)
        report(f"gpu acceptance: {phase.name}, run {len(phase.seconds)}: {phase.seconds[-1]:.1f} s "
               f"({self.used():.0f} of {self.seconds:.0f} s used)")
