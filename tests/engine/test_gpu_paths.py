"""The GPU paths' logic, checked on CPU with the GPU's facts injected (names, driver, NVML counters, build facts):
what only a GPU can show is left to the acceptance command (benchmarks/gpu_acceptance.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from train.engine import mfu

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
    from tests.workspace import Workspace
    from train.engine import loop
    from train.errors import UsageError

    ws = Workspace(tmp_path)
    monkeypatch.setattr(mfu, "measure_peak_tflops", lambda device, dtype: (1.0, 256))
    monkeypatch.setattr(loop, "build_model", lambda cfg, spec: (VggLike(spec.num_classes), "injected/vgg-like"))
    with pytest.raises(UsageError) as stopped:
        single.main([*ws.flags(), "--dataset", "synthetic", "--image-size", "8", "--num-classes", "4",
                     "--synthetic-train-size", "8", "--synthetic-val-size", "8", "--batch-size", "4", "--epochs", "1",
                     "--threads", "1", "--peak-cache", str(tmp_path / "peaks.json"), "--deterministic", "--arch", "vgg11"])
    assert str(stopped.value) == ("--deterministic: adaptive_avg_pool2d_backward_cuda has no deterministic "
                                  "implementation, and arch vgg11 needs it; train without --deterministic, or with "
                                  "an arch without it")
    assert ws.runs() == []  # stopped before the MLflow run was opened


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
