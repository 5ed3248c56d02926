"""benchmarks/gpu_acceptance.py without a GPU: it skips only where the machine has no NVIDIA GPU, and says why it
cannot run where torch cannot use the GPU there is; every row's criterion fails on measurements that miss it;
the budget trims repeats, never rows. And benchmarks/loaders.py's rate counts only what arrived while timed.
"""
import importlib
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import acceptance_criteria as criteria
from benchmarks.acceptance_criteria import (
    Budget,
    Phase,
    dali_verdict,
    ddp_verdict,
    energy_verdict,
    fp16_verdict,
    memory_verdict,
    resnet50_verdict,
    gpu_tests_verdict,
    unseen_gpus_line,
)
from tests.workspace import REPO

SCRIPT = str(REPO / "benchmarks" / "gpu_acceptance.py")
# torch's answer on a machine that has a GPU is the same as here
NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
H100 = "NVIDIA H100 80GB HBM3, 535.104.05"  # an R535 driver, common on H100 nodes: older than CUDA 13 needs


def fake_nvidia_smi(folder, answer: str, exit_code: int = 0) -> dict:
    """An environment whose PATH finds first an nvidia-smi that answers the acceptance's query with ``answer``."""
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$*" = "--query-gpu=name,driver_version --format=csv,noheader" ] || exit 2\n'
                      f"printf '%s\\n' '{answer}'\nexit {exit_code}\n")
    script.chmod(0o755)
    return {**NO_CUDA, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def acceptance(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=300)


def test_without_an_nvidia_gpu_it_says_skipped_and_exits_0(tmp_path):
    env = fake_nvidia_smi(tmp_path, "No devices were found", exit_code=6)  # what nvidia-smi says on such a machine
    proc = acceptance("--out", str(tmp_path / "table"), env=env)
    assert (proc.returncode, proc.stdout) == (0, "skipped: no CUDA device\n"), proc.stderr
    assert not (tmp_path / "table").exists()


def test_a_gpu_that_torch_cannot_use_fails_in_one_line_naming_the_drivers(tmp_path):
    env = fake_nvidia_smi(tmp_path, f"{H100}\n{H100}")
    proc = acceptance("--out", str(tmp_path / "table"), env=env)
    expected = unseen_gpus_line([("NVIDIA H100 80GB HBM3", "535.104.05")] * 2, torch.__version__, torch.version.cuda, "")
    assert (proc.returncode, proc.stdout) == (1, expected + "\n"), proc.stderr
    assert "535.104.05" in expected and "bash .ci/setup --gpu --here" in expected and "docs/install.md" in expected
    assert not (tmp_path / "table").exists()


def test_the_line_names_the_driver_the_torch_build_needs():
    h100 = [("NVIDIA H100 80GB HBM3", "535.104.05")]
    assert unseen_gpus_line(h100, "2.14.1", "13.0", None) == (
        "failed: this machine has 1 NVIDIA GPU(s) (NVIDIA H100 80GB HBM3) with driver 535.104.05, but torch cannot use "
        "them: torch 2.14.1 is built for CUDA 13.0, which needs driver >= 580. Install cnnbench into the node's own "
        "CUDA torch (bash .ci/setup --gpu --here) or a torch built for this driver: docs/install.md")
    assert "which needs driver >= 525.60.13" in unseen_gpus_line([("Tesla T4", "470.82.01")], "2.5.0", "12.4", None)
    assert "is a CPU-only build" in unseen_gpus_line(h100, "2.14.1+cpu", None, None)
    met = unseen_gpus_line([("NVIDIA H200", "580.65.06")], "2.14.1", "13.0", "")
    assert "(driver >= 580: met)" in met and "CUDA_VISIBLE_DEVICES='' hides them" in met


def test_nvidia_gpus_asks_nvml_where_there_is_no_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    names = ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"]
    for name, fake in {"nvmlInit": lambda: None, "nvmlShutdown": lambda: None, "nvmlDeviceGetCount": lambda: 2,
                       "nvmlSystemGetDriverVersion": lambda: "570.86.15", "nvmlDeviceGetHandleByIndex": lambda i: i,
                       "nvmlDeviceGetName": lambda handle: names[handle]}.items():
        monkeypatch.setattr(criteria.pynvml, name, fake)
    assert criteria.nvidia_gpus() == [("NVIDIA A100-SXM4-80GB", "570.86.15")] * 2

    def no_library():
        raise criteria.pynvml.NVMLError(criteria.pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(criteria.pynvml, "nvmlInit", no_library)
    assert criteria.nvidia_gpus() == []


def test_bad_flag_is_one_line_and_exit_2():
    proc = acceptance("--repeats", "0", env=NO_CUDA)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--repeats" in proc.stderr, proc.stderr


# --- each row's criterion: the measurements that pass it, and ones that miss it ---

def test_tests_and_ddp_rows_need_pytest_to_pass_and_the_job_to_finish_over_nccl():
    assert gpu_tests_verdict(0).ok and not gpu_tests_verdict(1).ok
    assert ddp_verdict("nccl", "FINISHED").ok
    assert not ddp_verdict("gloo", "FINISHED").ok  # trained, but not over NCCL
    assert not ddp_verdict("nccl", "FAILED").ok

def test_resnet50_rows_need_the_engine_near_the_bare_loop_and_an_a100s_rate():
    a100 = criteria.A100_RESNET50_AMP
    assert resnet50_verdict(0.98, 3000.0, a100).ok
    assert not resnet50_verdict(0.96, 3000.0, a100).ok  # the engine costs 4 %
    assert not resnet50_verdict(1.0, 2400.0, a100).ok  # slower than one A100 80GB
    assert resnet50_verdict(1.0, 2400.0, 1000.0).ok  # --min-images-per-sec for a smaller card
    assert resnet50_verdict(0.96, 3000.0, a100).criterion == (
        "engine/bare >= 0.97; > 2470 images/s (1x A100 80GB, AMP, NVIDIA DeepLearningExamples ResNet-50 v1.5: 2470)")


def test_fp16_row_needs_few_skipped_steps_and_a_falling_loss():
    assert fp16_verdict(skipped=3, steps=60, epoch_losses=[7.1, 6.8, 6.2]).ok
    assert not fp16_verdict(skipped=60, steps=60, epoch_losses=[7.1, 6.8, 6.2]).ok  # every step skipped
    assert not fp16_verdict(skipped=7, steps=60, epoch_losses=[7.1, 6.8, 6.2]).ok  # over a tenth
    assert not fp16_verdict(skipped=0, steps=60, epoch_losses=[6.9, 6.9, 6.9]).ok  # finite, but going nowhere
    assert not fp16_verdict(skipped=0, steps=60, epoch_losses=[6.9]).ok


def test_dali_row_needs_the_gpu_decoder_faster_and_the_same_batches():
    assert dali_verdict(9000.0, 700.0, True, 0.8).ok
    assert not dali_verdict(600.0, 700.0, True, 0.8).ok  # slower than the CPU decoder
    assert not dali_verdict(9000.0, 700.0, False, 0.8).ok  # labels differ
    assert not dali_verdict(9000.0, 700.0, True, 2.5).ok  # images differ by more than the tolerance


def test_memory_row_needs_a_peak_above_0_and_below_the_card():
    assert memory_verdict([21000.0, 19000.0], 81559.0).ok
    assert not memory_verdict([0.0, 19000.0], 81559.0).ok  # nothing measured
    assert not memory_verdict([90000.0], 81559.0).ok
    assert not memory_verdict([], 81559.0).ok


def test_energy_row_needs_energy_above_0_and_within_the_power_limit():
    assert energy_verdict(0.2, 7680, 2.5, 700.0).ok  # 1536 J in 2.5 s: 614 W
    assert not energy_verdict(0.0, 7680, 2.5, 700.0).ok
    assert not energy_verdict(0.25, 7680, 2.5, 700.0).ok  # 1920 J in 2.5 s: 768 W over a 700 W limit


# --- the budget ---

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def phase(self, name: str, seconds: float, wanted: int = 1, fails: bool = False) -> Phase:
        def measure():
            self.now += seconds
            if fails:
                raise RuntimeError("out of memory")
            return seconds
        return Phase(name, measure, wanted)


def test_the_budget_runs_every_row_once_then_the_repeats_that_fit():
    clock = FakeClock()
    phases = [clock.phase("a", 10, wanted=3), clock.phase("b", 30), clock.phase("c", 20, wanted=4)]
    lines = []
    Budget(100, clock).run(phases, lines.append)
    # once each: 60 s; a twice more (80 s); c once more ends at 100 s, and another would end past it
    assert [len(p.runs) for p in phases] == [3, 1, 2] and clock.now == 100
    assert [p.trimmed for p in phases] == [False, False, True]
    assert lines[-1] == "gpu acceptance: c, run 2: 20.0 s (100 of 100 s used)"


def test_rows_run_even_past_the_budget_and_a_failed_row_is_not_repeated():
    clock = FakeClock()
    phases = [clock.phase("a", 10, wanted=3, fails=True), clock.phase("b", 30, wanted=2)]
    Budget(20, clock).run(phases, lambda line: None)
    assert [len(p.seconds) for p in phases] == [1, 1] and clock.now == 40  # b measured once, over the budget
    assert isinstance(phases[0].error, RuntimeError) and not phases[0].trimmed and phases[1].trimmed


@pytest.fixture
def benchmarks(monkeypatch):
    """A benchmark script's module: the benchmarks import each other as scripts do."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module


def test_a_row_says_how_many_repeats_ran_and_a_phase_that_raised_fails_its_row(benchmarks):
    acceptance = benchmarks("gpu_acceptance")
    clock = FakeClock()
    trimmed, raised = clock.phase("a", 10, wanted=3), clock.phase("b", 5, fails=True)
    Budget(25, clock).run([trimmed, raised], lambda line: None)
    judged = acceptance.row(trimmed, lambda runs: acceptance.tests_row([{
        "exit_code": 0, "files": 3, "log": "gpu-tests.log", "summary": "9 passed", "skips": []}]))
    assert (judged.outcome.status, judged.seconds) == ("ok", "20 (2 of 3 runs: budget)")
    failed = acceptance.row(raised, lambda runs: pytest.fail("a phase that raised has no measurements to judge"))
    assert (failed.outcome.status, failed.outcome.result, failed.outcome.detail) == ("failed", "RuntimeError",
                                                                                     "out of memory")


def test_a_budget_that_is_not_positive_is_one_line_and_exit_2(benchmarks, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmarks("gpu_acceptance").parse_args(["--budget-s", "0"])
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1 and "--budget-s" in said, said


# --- benchmarks/loaders.py ---

class TimedLoader:
    """Batches of 10 images, each arriving ``delays`` seconds after the one before, on a fake clock."""

    def __init__(self, clock: FakeClock, delays: list[float]):
        self.clock, self.delays = clock, delays

    def __len__(self) -> int:
        return len(self.delays)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for delay in self.delays:
            self.clock.now += delay
            yield torch.zeros(10), torch.zeros(10)


def test_loader_rate_counts_only_the_batches_that_arrive_while_timed(benchmarks):
    loaders = benchmarks("loaders")
    clock = FakeClock()
    # two warm-up batches arrive by 6 s; the four after them (40 images) in the 9 s that follow
    rate = loaders.loader_rate(TimedLoader(clock, [5, 1, 2, 2, 2, 3]), 0, 2, torch.device("cpu"), clock)
    assert rate == 40 / 9
    with pytest.raises(ValueError, match="leaves none to time"):
        loaders.loader_rate(TimedLoader(clock, [5, 1]), 0, 2, torch.device("cpu"), clock)
