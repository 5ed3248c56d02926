"""The GPU paths' logic, checked on CPU with the GPU's facts injected (names, driver, NVML counters, build facts):
what only a GPU can show is left to the acceptance command (benchmarks/gpu_acceptance.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from train.engine import gpus, mfu

CUDA = torch.device("cuda", 0)  # only named: nothing is allocated on it


@pytest.mark.parametrize("name, mode, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5),  # SXM: 1,979 with sparsity
    ("NVIDIA H100 80GB HBM3", "tf32", 494.5),
    ("NVIDIA H100 80GB HBM3", "fp32", 67),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA H100 NVL", "fp16", 835.5),
    ("NVIDIA H200", "bf16", 989.5),
    ("NVIDIA B200", "bf16", 2250),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312),
    ("NVIDIA A100-SXM4-40GB", "tf32", 156),
    ("NVIDIA A100 80GB PCIe", "fp16", 312),
    ("NVIDIA L40S", "bf16", 362.05),
    ("NVIDIA L4", "bf16", 121),
    ("NVIDIA A10", "tf32", 62.5),
    ("Tesla V100-SXM2-32GB", "fp16", 125),
])
def test_rated_dense_peak_is_matched_on_the_name_torch_reports(name, mode, tflops):
    peak = mfu.rated_peak(name, mode)
    assert peak.tflops == tflops
    assert peak.source.startswith(f"rated dense {mode}: ") and "datasheet" in peak.source


@pytest.mark.parametrize("name, reason", [
    ("NVIDIA GeForce RTX 4090", "n/a: rated peak unknown for NVIDIA GeForce RTX 4090"),
    # a MIG slice has a share of the GPU: the whole GPU's rated peak would understate its MFU
    ("NVIDIA A100-SXM4-80GB MIG 1g.10gb", "n/a: rated peak unknown for NVIDIA A100-SXM4-80GB MIG 1g.10gb"),
    ("Tesla V100-PCIE-16GB", "n/a: Tesla V100-PCIE-16GB has no bf16 tensor cores, hence no rated bf16 peak"),
])
def test_a_gpu_without_a_rated_peak_gets_none(name, reason):
    peak = mfu.rated_peak(name, "bf16")
    assert math.isnan(peak.tflops) and peak.source == reason


def test_fp32_is_rated_at_tf32_exactly_when_cudnn_uses_it(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert mfu.math_mode(torch.float32) == "fp32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert mfu.math_mode(torch.float32) == "tf32"
    assert (mfu.math_mode(torch.bfloat16), mfu.math_mode(torch.float16)) == ("bf16", "fp16")


@pytest.fixture
def fake_gpu(monkeypatch):
    """An H100 SXM on driver 550 whose matrix products reach 800 TFLOP/s; ``measured`` lists each measurement."""
    gpu = type("FakeGpu", (), {})()
    gpu.name, gpu.driver, gpu.measured = "NVIDIA H100 80GB HBM3", "550.54.15", []
    monkeypatch.setattr(mfu, "device_name", lambda device: gpu.name)
    monkeypatch.setattr(mfu, "gpu_driver_version", lambda: gpu.driver)
    monkeypatch.setattr(mfu, "measure_peak_tflops",
                        lambda device, dtype: gpu.measured.append(gpu.driver) or (800.0, 8192))
    return gpu


def test_mfu_is_over_the_rated_peak_and_the_measured_one_is_a_second_figure(fake_gpu, tmp_path):
    peaks = mfu.find_peaks(CUDA, torch.bfloat16, None, str(tmp_path / "peaks.json"))
    assert (peaks.rated.tflops, peaks.measured.tflops) == (989.5, 800.0)
    # ResNet-50: 8.2 GFLOPs forward per image at 3,000 images/s on one GPU
    assert mfu.mfu_pct(8.2e9, 3000, peaks.rated.tflops, 1) == pytest.approx(100 * 3 * 8.2e9 * 3000 / 989.5e12)
    assert mfu.mfu_pct(8.2e9, 3000, peaks.measured.tflops, 1) == pytest.approx(9.225)
    assert mfu.peak_params(peaks)["peak_tflops"] == 989.5
    assert mfu.peak_params(peaks)["measured_peak_tflops"] == 800.0


def test_an_unknown_gpu_gets_n_a_and_the_measured_peak(fake_gpu, tmp_path):
    fake_gpu.name = "NVIDIA RTX 6000 Ada Generation"
    peaks = mfu.find_peaks(CUDA, torch.bfloat16, None, str(tmp_path / "peaks.json"))
    params = mfu.peak_params(peaks)
    assert params["peak_tflops"] == "n/a: rated peak unknown for NVIDIA RTX 6000 Ada Generation"
    assert params["measured_peak_tflops"] == 800.0
    assert math.isnan(mfu.mfu_pct(8.2e9, 3000, peaks.rated.tflops, 1))


def test_a_given_peak_wins_over_the_rated_one(fake_gpu, tmp_path):
    peaks = mfu.find_peaks(CUDA, torch.bfloat16, 900.0, str(tmp_path / "peaks.json"))
    assert peaks.rated == mfu.Peak(900.0, "given (--peak-tflops)") and peaks.measured.tflops == 800.0


def test_the_measured_peak_is_cached_per_driver_and_measured_again_on_request(fake_gpu, tmp_path):
    cache = str(tmp_path / "peaks.json")
    mfu.find_peak(CUDA, torch.bfloat16, None, cache)
    assert mfu.find_peak(CUDA, torch.bfloat16, None, cache).source.startswith("cached")
    fake_gpu.driver = "570.86.10"  # a driver update: its kernels and clocks may differ
    mfu.find_peak(CUDA, torch.bfloat16, None, cache)
    assert mfu.find_peak(CUDA, torch.bfloat16, None, cache, remeasure=True).source.startswith("measured")
    assert fake_gpu.measured == ["550.54.15", "570.86.10", "570.86.10"]
    keys = sorted(json.loads((tmp_path / "peaks.json").read_text()))
    assert keys == [f"NVIDIA H100 80GB HBM3 | bfloat16 | torch {torch.__version__} | driver {d}"
                    for d in ("550.54.15", "570.86.10")]


def test_a_cpu_has_no_rated_peak_and_its_mfu_is_over_the_measured_one(monkeypatch, tmp_path):
    monkeypatch.setattr(mfu, "measure_peak_tflops", lambda device, dtype: (0.2, 512))
    peaks = mfu.find_peaks(torch.device("cpu"), torch.float32, None, str(tmp_path / "peaks.json"))
    assert peaks.rated.tflops == peaks.measured.tflops == 0.2
    assert peaks.rated.source.endswith("(a CPU has no rated peak: the measured one)")


# ---- torch.compile: one training graph for the whole run ----

def test_two_epochs_with_a_short_last_batch_compile_the_training_step_once(monkeypatch):
    from torch._dynamo.testing import CompileCounter
    from tqdm import tqdm

    from dataloaders import build_loaders
    from train.context import DistContext
    from train.engine import loop
    from train.engine.config import make_config
    from train.engine.distributed import SingleProcess

    # 2 full batches of 8 and a short one of 3, twice
    cfg = make_config(arch="resnet-20", dataset="synthetic", image_size=8, num_classes=4, batch_size=8,
                      synthetic_train_size=19, synthetic_val_size=8, warmup_steps=0, compile=True)
    dist = SingleProcess(DistContext())
    counter = CompileCounter()
    monkeypatch.setattr(loop, "maybe_compile", lambda model, cfg: torch.compile(model, backend=counter))
    torch._dynamo.reset()
    torch.manual_seed(0)
    loaders = build_loaders(cfg.data, dist.ctx)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4))
    training = loop._prepare(cfg, dist, tiny, None, loop.TrainState())
    images = []
    for epoch in (1, 2):
        loaders.train.set_epoch(epoch)
        images.append(loop.train_one_epoch(training.step, loaders.train, cfg, dist, tqdm(disable=True)).images)
    torch._dynamo.reset()
    assert images == [19, 19]
    assert counter.frame_count == 1


# ---- --deterministic: an operation without a deterministic kernel stops the run at start-up ----

class CudaOnlyNondeterministicPool(torch.autograd.Function):
    """Adaptive average pooling whose backward fails as torch's CUDA kernel does under deterministic algorithms."""

    @staticmethod
    def forward(ctx, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 1)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you "
                           "set 'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for "
                           "this operation, or you can use the 'warn_only=True' option, if that's acceptable for "
                           "your application.")


class VggLike(torch.nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(CudaOnlyNondeterministicPool.apply(self.conv(x)).flatten(1))


@pytest.fixture
def restores_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_run_of_a_net_with_a_nondeterministic_op_stops_at_start_up_naming_it(tmp_path, monkeypatch,
                                                                                          restores_determinism):
    from launchers import single
    from train.engine import loop, tracking
    from train.errors import UsageError

    opened = []

    class Tracker(tracking.NullTracker):  # the MLflow run would open after the start-up checks
        def run(self, *args, **kwargs):
            opened.append(args)
            return super().run(*args, **kwargs)

    monkeypatch.setattr(loop, "make_tracker", lambda *args: Tracker())
    monkeypatch.setattr(mfu, "measure_peak_tflops", lambda device, dtype: (1.0, 256))
    monkeypatch.setattr(loop, "build_model", lambda cfg, spec: (VggLike(spec.num_classes), "injected/vgg-like"))
    with pytest.raises(UsageError) as stopped:
        single.main(["--checkpoint-dir", str(tmp_path), "--dataset", "synthetic", "--image-size", "8",
                     "--num-classes", "4", "--synthetic-train-size", "8", "--synthetic-val-size", "8", "--batch-size",
                     "4", "--epochs", "1", "--threads", "1", "--peak-cache", str(tmp_path / "peaks.json"),
                     "--deterministic", "--arch", "vgg11"])
    assert str(stopped.value) == ("--deterministic: adaptive_avg_pool2d_backward_cuda has no deterministic "
                                  "implementation, and arch vgg11 needs it; train without --deterministic, or with "
                                  "an arch without it")
    assert opened == []  # stopped before the MLflow run was opened


def test_the_deterministic_probe_passes_a_net_whose_ops_all_have_deterministic_kernels(restores_determinism):
    from dataloaders import build_loaders
    from train.context import DistContext
    from train.engine import loop
    from train.engine.builders import build_model
    from train.engine.config import make_config

    cfg = make_config(arch="resnet-20", dataset="synthetic", image_size=8, num_classes=4, synthetic_train_size=8,
                      synthetic_val_size=8, batch_size=4, deterministic=True)
    spec = build_loaders(cfg.data, DistContext()).spec
    model = build_model(cfg, spec)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.use_deterministic_algorithms(True)
    assert loop._nondeterministic_op(model, cfg, spec, torch.device("cpu")) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics untouched
    assert all(p.grad is None for p in model.parameters()) and model.training


# ---- NVML: the run's own GPUs, their memory and energy (a fake NVML: no GPU here) ----

class FakeNvml:
    """pynvml's calls the engine and MLflow's GPU monitor make, over four GPUs; the third is split by MIG and the
    fourth has no energy counter (as before Volta)."""

    NVML_DEVICE_MIG_ENABLE = 1

    class NVMLError(Exception):
        pass

    def __init__(self):
        self.gpus = [
            {"uuid": "GPU-aaaa1111", "used_mib": 1000, "energy_mj": 5_000_000, "util": 10},
            {"uuid": "GPU-bbbb2222", "used_mib": 2000, "energy_mj": 7_000_000, "util": 20},
            {"uuid": "GPU-cccc3333", "used_mib": 3000, "energy_mj": 9_000_000, "util": 30,
             "migs": ["MIG-x1", "MIG-x2"]},
            {"uuid": "GPU-dddd4444", "used_mib": 4000, "energy_mj": None, "util": 40},
        ]

    def nvmlInit(self):
        pass

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"]

    def nvmlDeviceGetMigMode(self, handle):
        if "migs" not in handle:
            raise self.NVMLError("Not Supported")
        return (1, 1)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, j):
        if j >= len(handle["migs"]):
            raise self.NVMLError("Not Found")
        return {"uuid": handle["migs"][j]}

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"used": handle["used_mib"] * 2**20, "total": 80 * 2**30})()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle["energy_mj"] is None:
            raise self.NVMLError("Not Supported")
        return handle["energy_mj"]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return type("Utilization", (), {"gpu": handle["util"]})()

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000


NODE = [gpus.NvmlGpu("GPU-aaaa1111"), gpus.NvmlGpu("GPU-bbbb2222"),
        gpus.NvmlGpu("GPU-cccc3333", ("MIG-x1", "MIG-x2")), gpus.NvmlGpu("GPU-dddd4444")]


@pytest.mark.parametrize("visible, indices", [
    (None, [0, 1, 2, 3]),  # unset: every GPU
    ("2,3", [2, 3]),
    (" 1, 0", [1, 0]),  # CUDA's order is the list's
    ("GPU-dddd4444,GPU-bbbb", [3, 1]),  # a UUID, or a prefix naming one GPU
    ("MIG-x2", [2]),  # a MIG device is on its GPU
    ("MIG-GPU-cccc3333/1/0", [2]),  # the older MIG form
    ("1,7,2", [1]),  # CUDA ends the list at the first entry naming no device
    ("GPU-,0", []),  # a prefix of several
    ("-1", []),
    ("", []),
])
def test_cuda_visible_devices_maps_cuda_indices_to_nvml_ones(visible, indices):
    assert gpus.nvml_indices(visible, NODE) == indices


@pytest.fixture
def fake_nvml(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setattr(gpus, "_nvml", lambda: nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cccc3333,GPU-aaaa1111,3")
    return nvml


def test_the_run_gpus_memory_and_energy_are_those_of_its_own_gpu(fake_nvml):
    assert gpus.run_nvml_indices([0, 1, 2]) == [2, 0, 3]
    assert gpus.device_used_mib(torch.device("cuda", 1)) == 1000  # cuda:1 is NVML's GPU 0
    counter = gpus.energy_counter(torch.device("cuda", 0))
    assert counter.read_j() == 9000.0 and counter.source == "NVML total energy consumption of each rank's GPU"
    assert math.isnan(gpus.device_used_mib(torch.device("cpu")))


def test_without_an_energy_counter_energy_is_n_a_and_says_why(fake_nvml, monkeypatch):
    assert gpus.energy_counter(torch.device("cuda", 2)) == gpus.EnergyCounter(
        None, "n/a: this GPU has no NVML energy counter (Not Supported)")
    assert gpus.energy_counter(torch.device("cpu")) == gpus.EnergyCounter(
        None, "n/a: a cpu run (NVML's energy counters are GPUs')")
    monkeypatch.setattr(gpus, "_nvml", lambda: None)
    assert gpus.energy_counter(torch.device("cuda", 0)).source.startswith("n/a: NVML is not there")


def test_system_metrics_watch_the_runs_gpus_under_their_nvml_numbers(fake_nvml, monkeypatch):
    import sys

    from mlflow.system_metrics.metrics import gpu_monitor

    from train.engine import tracking

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    monkeypatch.setattr(gpu_monitor, "pynvml", fake_nvml, raising=False)
    monitor = type("Monitor", (), {})()
    monitor.monitors = ["cpu monitor", gpu_monitor.GPUMonitor()]  # MLflow's: every GPU of the node
    tracking._watch_only(monitor, gpus.run_nvml_indices([0, 1]))
    cpu, watched = monitor.monitors
    watched.collect_metrics()
    metrics = watched.aggregate_metrics()
    assert cpu == "cpu monitor"
    assert {name for name in metrics if name.endswith("utilization_percentage")} == {
        "gpu_2_utilization_percentage", "gpu_0_utilization_percentage"}
    assert (metrics["gpu_2_utilization_percentage"], metrics["gpu_0_utilization_percentage"]) == (30, 10)
    tracking._watch_only(monitor, [])  # a node without the run's GPUs, or without NVML
    assert monitor.monitors == ["cpu monitor"]


def test_energy_per_image_is_over_the_timed_windows_and_energy_to_target_over_whole_epochs():
    from train.context import DistContext
    from train.engine import loop
    from train.engine.distributed import SingleProcess
    from train.engine.measure import EpochTimer

    # 9 full batches of 4 and one of 2; every step takes 5 J; 2 warm-up steps: steps 3..9 are timed
    steps_done = [0]
    timer = EpochTimer(torch.device("cpu"), warmup_steps=2, window_steps=3, energy_j=lambda: 5.0 * steps_done[0])
    batches = [(torch.zeros(4, 1), torch.zeros(4))] * 9 + [(torch.zeros(2, 1), torch.zeros(2))]
    for _ in timer.iterate(batches, 10, timed_steps=9):
        steps_done[0] += 1
    assert (timer.timing.energy_j, timer.timing.images, timer.timing.epoch_energy_j) == (35.0, 28, 50.0)
    dist = SingleProcess(DistContext())
    no_skips = torch.zeros((), dtype=torch.float64)
    metrics, _, _, epoch_energy = loop._job_throughput(timer.timing, no_skips, dist)
    assert (metrics["energy_per_image_j"], epoch_energy) == (1.25, 50.0)
    without = loop._job_throughput(EpochTimer(torch.device("cpu"), 0, None).timing, no_skips, dist)[0]
    assert "energy_per_image_j" not in without  # no counter

    cfg = type("Cfg", (), {"target_top1_err": 20.0})()
    epoch = {"val_top1_err": 19.0, "top1_err": 30.0, "epoch_time_s": 1.0, "eval_time_s": 0.5}
    state = loop.TrainState(energy_j=100.0)
    loop._count(state, 1, loop.EpochResult(epoch, [], 10, 10, 1.0, energy_j=50.0), run_seconds=2.0)
    assert loop._reaches_target(cfg, state)
    assert state.target["energy_to_target_j"] == 150.0
    state = loop.TrainState(energy_j=math.nan)
    loop._count(state, 1, loop.EpochResult(epoch, [], 10, 10, 1.0, energy_j=50.0), run_seconds=2.0)
    assert loop._reaches_target(cfg, state) and "energy_to_target_j" not in state.target


def test_memory_is_the_most_allocated_reserved_and_used_of_any_epoch(monkeypatch):
    from train.context import DistContext
    from train.engine import loop, measure
    from train.engine.distributed import SingleProcess

    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 6 * 2**30)
    assert measure.peak_memory_reserved_mib(torch.device("cuda", 0)) == 6144
    assert math.isnan(measure.peak_memory_reserved_mib(torch.device("cpu")))

    epochs = iter([(100.0, 200.0, 900.0), (150.0, 180.0, 950.0)])  # allocated, reserved, used per epoch
    state = loop.TrainState()
    for allocated, reserved, used in epochs:
        monkeypatch.setattr(loop, "peak_memory_mib", lambda device: allocated)
        monkeypatch.setattr(loop, "peak_memory_reserved_mib", lambda device: reserved)
        monkeypatch.setattr(loop, "device_used_mib", lambda device: used)
        loop._note_memory(SingleProcess(DistContext()), state)
    assert (state.peak_mem_mib, state.peak_mem_reserved_mib, state.gpu_mem_used_mib) == (150.0, 200.0, 950.0)
    assert {k: v for k, v in loop._run_metrics({"val_top1_err": 1, "val_top5_err": 0}, state, 1).items()
            if "mem" in k} == {"peak_mem_mib": 150.0, "peak_mem_reserved_mib": 200.0, "gpu_mem_used_mib": 950.0}
    cpu = loop.TrainState(peak_mem_mib=80.0)
    assert "peak_mem_reserved_mib" not in loop._run_metrics({"val_top1_err": 1, "val_top5_err": 0}, cpu, 1)


# ---- Horovod on GPUs: NCCL, or a refusal (the build's facts injected: no GPU, and no Horovod rebuild, here) ----

@pytest.fixture
def horovod_build(monkeypatch):
    """A Horovod whose ``nccl_built()`` is ``build.nccl`` on a rank whose device is ``build.device``."""
    import sys
    import types

    from train.engine import distributed

    build = types.SimpleNamespace(nccl=False, device="cuda")
    hvd = types.SimpleNamespace(init=lambda: None, rank=lambda: 0, local_rank=lambda: 0, size=lambda: 1,
                                local_size=lambda: 1, nccl_built=lambda: build.nccl)
    monkeypatch.setitem(sys.modules, "horovod", types.SimpleNamespace(torch=hvd))
    monkeypatch.setitem(sys.modules, "horovod.torch", hvd)
    monkeypatch.setattr(distributed, "pick_device", lambda device, local_rank: torch.device(build.device, 0)
                        if build.device == "cuda" else torch.device("cpu"))
    return build


def run_horovod_launcher(monkeypatch, *flags: str):
    """launchers/horovod.py as horovodrun starts it; the config and job it would train, or its exit and stderr."""
    from launchers import horovod as launcher
    from train.engine.launch import exit_on_usage_error

    trained = []
    monkeypatch.setattr(launcher, "train_and_report", lambda cfg, job, checkpoint: trained.append((cfg, job)) or 0)
    with pytest.raises(SystemExit) as exited:
        exit_on_usage_error(lambda: launcher.main(["--epochs", "1", *flags]))
    return exited.value.code, trained


def test_horovod_without_nccl_is_refused_on_cuda_in_one_line_naming_the_rebuild(horovod_build, monkeypatch, capsys):
    code, trained = run_horovod_launcher(monkeypatch)
    assert (code, trained) == (2, [])
    assert capsys.readouterr().err == (
        "cnnbench: error: this Horovod was built without NCCL: on CUDA every gradient would go through host memory "
        "and Gloo; rebuild it on this node with `bash .ci/build-horovod` (NCCL from torch's nvidia-nccl wheel), or "
        "give --allow-horovod-without-nccl to measure that path\n")


def test_horovod_without_nccl_trains_on_cuda_when_asked_and_the_run_is_tagged_so(horovod_build, monkeypatch):
    code, [(cfg, job)] = run_horovod_launcher(monkeypatch, "--allow-horovod-without-nccl")
    assert (code, job.ctx.backend) == (0, "gloo")
    assert cfg.run_tags == {"cnnbench.horovod": "built without NCCL: CUDA gradients all-reduced through host memory "
                                                "by Gloo (--allow-horovod-without-nccl)"}


@pytest.mark.parametrize("nccl, device, backend", [(True, "cuda", "nccl"), (False, "cpu", "gloo")])
def test_horovod_with_nccl_or_on_cpu_trains_untagged(horovod_build, monkeypatch, nccl, device, backend):
    horovod_build.nccl, horovod_build.device = nccl, device
    code, [(cfg, job)] = run_horovod_launcher(monkeypatch)
    assert (code, job.ctx.backend, cfg.run_tags) == (0, backend, {})
