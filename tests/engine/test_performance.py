"""Every run explains its number (step-time breakdown, MFU, system metrics) and the fast path's pieces
(SGD kernels, largest-batch search, steps without host synchronisation, bf16 + channels-last + compile)."""
from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
import torch
from tqdm import tqdm

from dataloaders import build_loaders
from tests.workspace import Workspace, check_ok
from train.context import DistContext
from train.engine import builders, loop, mfu
from train.engine.batch_search import BatchFit, fit_batch_size, largest_fitting_batch
from train.engine.breakdown import PARTS, StepBreakdown
from train.engine.config import make_config
from train.engine.distributed import SingleProcess
from train.engine.measure import EpochTiming
from train.errors import UsageError

PEAK_TFLOPS = 0.05
STEADY_STEPS = 25


def small(world_size: int = 1) -> list[str]:
    """30 steps per rank, 25 after the warm-up, every one sampled for the breakdown."""
    return ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "10", "--batch-size", "16",
            "--synthetic-train-size", str(30 * 16 * world_size), "--synthetic-val-size", "32", "--epochs", "1",
            "--peak-tflops", str(PEAK_TFLOPS), "--breakdown-every", "1"]


@pytest.fixture
def quick_system_metrics(monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # MLflow's default: every 10 s


def parts_ms(metrics: dict) -> float:
    return sum(metrics[f"{part}_ms"] for part in PARTS)


def system_metric_names(run) -> set[str]:
    return {name for name in run.data.metrics if name.startswith("system/")}


def assert_breakdown_adds_up(metrics: dict) -> None:
    assert metrics["breakdown_steps"] == STEADY_STEPS
    assert min(metrics[f"{part}_ms"] for part in ("forward", "backward", "optimizer")) > 0
    assert parts_ms(metrics) == pytest.approx(metrics["step_time_ms"], rel=0.10)


def assert_mfu_exact(run, world_size: int) -> None:
    m, p = run.data.metrics, run.data.params
    expected = 100 * 3 * m["flops_per_image"] * m["epoch_images_per_sec"] / (world_size * PEAK_TFLOPS * 1e12)
    assert m["mfu_pct"] == pytest.approx(expected, rel=1e-9)
    assert (float(p["peak_tflops"]), p["peak_tflops_source"]) == (PEAK_TFLOPS, "given (--peak-tflops)")
    # the second figure, over the peak measured by matrix products on this CPU
    measured = float(p["measured_peak_tflops"])
    assert m["mfu_measured_peak_pct"] == pytest.approx(expected * PEAK_TFLOPS / measured, rel=1e-9)


def launched_run(ws: Workspace, *args: str):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # MLflow's default: every 10 s
        check_ok(ws.launch(*small(), *args, "--system-metrics"))
    (run,) = ws.runs()
    return run


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    return launched_run(Workspace(tmp_path_factory.mktemp("single")), "--threads", "1")


def test_breakdown_of_one_process_adds_up_to_the_step_time(single_run):
    assert_breakdown_adds_up(single_run.data.metrics)
    assert single_run.data.metrics["allreduce_exposed_ms"] == 0


def test_mfu_is_computed_against_the_given_peak(single_run):
    assert_mfu_exact(single_run, world_size=1)


def test_system_metrics_are_recorded_under_the_node_name_when_switched_on(single_run):
    assert single_run.data.params["system_metrics"] == "True"
    assert f"system/{socket.gethostname()}/cpu_utilization_percentage" in system_metric_names(single_run)


def test_fast_path_settings_are_logged(single_run):
    p = single_run.data.params
    assert (p["sgd_impl"], p["batch_size_search"], p["breakdown_every"]) == ("for-loop", "off (--batch-size)", "1")


@pytest.mark.slow
def test_ddp_breakdown_adds_up_with_the_exposed_all_reduce_and_records_system_metrics(tmp_path,
                                                                                       quick_system_metrics):
    ws = Workspace(tmp_path)
    check_ok(ws.torchrun(2, *small(world_size=2)))
    (run,) = ws.runs()
    assert_breakdown_adds_up(run.data.metrics)
    assert run.data.metrics["allreduce_exposed_ms"] > 0  # the last bucket's all-reduce cannot hide behind backward
    assert_mfu_exact(run, world_size=2)
    # on by default for a multi-process job; one node here, so one recording process
    assert run.data.params["system_metrics"] == "True"
    assert {name.split("/")[1] for name in system_metric_names(run)} == {socket.gethostname()}


@pytest.mark.slow
def test_horovod_breakdown_marks_its_all_reduce_wait_apart(tmp_path):
    pytest.importorskip("horovod.torch")
    ws = Workspace(tmp_path)
    check_ok(ws.horovodrun(2, *small(world_size=2), "--no-system-metrics"))
    (run,) = ws.runs()
    assert_breakdown_adds_up(run.data.metrics)
    assert run.data.metrics["allreduce_exposed_ms"] > 0
    assert run.data.params["system_metrics"] == "False" and not system_metric_names(run)


def slow_loader(batches: int, wait_s: float):
    for _ in range(batches):
        time.sleep(wait_s)
        yield torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)


class HorovodLikeOptimizer:
    """What the breakdown sees of Horovod's DistributedOptimizer: a wait for the all-reduces, and a way to skip it."""

    def __init__(self):
        self.updates_without_wait = 0

    def synchronize(self) -> None:
        time.sleep(0.003)

    @contextlib.contextmanager
    def skip_synchronize(self):
        self.updates_without_wait += 1
        yield


def test_breakdown_samples_the_first_then_every_nth_steady_step_and_times_each_part():
    breakdown = StepBreakdown(torch.device("cpu"), every=3, warmup_steps=2)
    optimizer, sampled = HorovodLikeOptimizer(), []
    for _ in breakdown.iterate(slow_loader(10, wait_s=0.01), 10):
        sampled.append(breakdown.sample is not None)
        time.sleep(0.005)
        breakdown.mark("forward")
        breakdown.mark_backward()
        with breakdown.update(optimizer):
            pass
        breakdown.mark("optimizer")
    # steady steps 1..8 are steps 3..10: the 1st, 4th and 7th steady ones are sampled
    assert [i for i, s in enumerate(sampled, start=1) if s] == [3, 6, 9]
    assert optimizer.updates_without_wait == 3  # only sampled steps wait apart; others leave it to step()
    m = breakdown.summary(SingleProcess(DistContext()), EpochTiming(seconds=8 * 0.016))
    assert m["breakdown_steps"] == 3
    assert m["data_wait_ms"] >= 10 and m["forward_ms"] >= 5 and m["allreduce_exposed_ms"] >= 3
    assert m["step_time_ms"] == pytest.approx(16)  # the timer's seconds over the 8 steady steps


def test_measured_peak_is_cached_per_device_and_dtype_and_a_given_one_wins(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(mfu, "measure_peak_tflops", lambda device, dtype: measured.append(dtype) or (1.5, 512))
    cache, cpu = tmp_path / "peaks.json", torch.device("cpu")

    first = mfu.find_peak(cpu, torch.float32, None, str(cache))
    again = mfu.find_peak(cpu, torch.float32, None, str(cache))
    other_dtype = mfu.find_peak(cpu, torch.bfloat16, None, str(cache))
    given = mfu.find_peak(cpu, torch.float32, 7.0, str(cache))

    assert measured == [torch.float32, torch.bfloat16]
    assert first.source.startswith("measured") and "512x512 float32" in first.source
    assert (again.tflops, again.source.startswith(f"cached in {cache}")) == (1.5, True)
    assert other_dtype.tflops == 1.5 and len(json.loads(cache.read_text())) == 2
    assert given == mfu.Peak(7.0, "given (--peak-tflops)")


def test_an_unreadable_peak_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(mfu, "measure_peak_tflops", lambda device, dtype: (2.0, 256))
    cache = tmp_path / "peaks.json"
    cache.write_text("{not json")
    assert mfu.find_peak(torch.device("cpu"), torch.float32, None, str(cache)).source.startswith("measured")
    assert [e["tflops"] for e in json.loads(cache.read_text()).values()] == [2.0]


def test_peak_measurement_grows_the_product_within_its_budget():
    tflops, side = mfu.measure_peak_tflops(torch.device("cpu"), torch.float32, seconds=0.3)
    assert tflops > 0 and side in mfu.SIDES


def test_mfu_formula_counts_forward_and_backward_over_all_devices():
    # 1 GFLOP forward -> 3 GFLOP per trained image; 100 images/s on 2 devices of 1 TFLOP/s each
    assert mfu.mfu_pct(1e9, 100, 1.0, 2) == pytest.approx(15.0)


def oom_above(limit: int, tried: list):
    def fits(batch: int) -> None:
        tried.append(batch)
        if batch > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    return fits


def test_batch_search_halves_on_out_of_memory_and_records_it():
    tried = []
    assert largest_fitting_batch(oom_above(100, tried), 512) == BatchFit(64, "oom at 512, 256, 128 -> 64")
    assert tried == [512, 256, 128, 64]
    assert largest_fitting_batch(oom_above(100, []), 64) == BatchFit(64, "64 fits")
    with pytest.raises(UsageError, match="out of memory at every batch size from 4 down to 1"):
        largest_fitting_batch(oom_above(0, []), 4)


def test_max_batch_size_probes_the_real_training_step(monkeypatch):
    step_call, probed = builders.Step.__call__, []

    def oom_above_16(self, images, labels):  # as a device with room for 16 images would
        probed.append(len(images))
        if len(images) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return step_call(self, images, labels)

    monkeypatch.setattr(builders.Step, "__call__", oom_above_16)
    cfg = make_config(dataset="synthetic", image_size=16, num_classes=10, batch_size=128, max_batch_size=64)
    fitted, record = fit_batch_size(cfg, SingleProcess(DistContext()))
    assert (fitted.data.batch_size, fitted.max_batch_size, record) == (16, None, "oom at 64, 32 -> 16")
    assert probed == [64, 32, 16, 16]  # two steps at the batch that fits: the optimizer's state is allocated too
    assert fit_batch_size(make_config(batch_size=128), None) == (make_config(batch_size=128), "off (--batch-size)")


def test_sgd_kernels_make_the_same_update():
    torch.manual_seed(0)
    source = torch.nn.Linear(8, 4)
    x, y = torch.randn(16, 8), torch.randint(4, (16,))
    weights = {}
    for impl in ("fused", "foreach", "for-loop"):
        model = torch.nn.Linear(8, 4)
        model.load_state_dict(source.state_dict())
        optimizer = builders.build_optimizer(model, make_config(sgd_impl=impl), 1, torch.device("cpu"))
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        weights[impl] = model.weight.detach()
    assert not torch.equal(weights["fused"], source.weight)
    torch.testing.assert_close(weights["fused"], weights["for-loop"])
    torch.testing.assert_close(weights["foreach"], weights["for-loop"])
    assert builders.sgd_impl(make_config(), torch.device("cpu")) == "for-loop"


def test_an_epoch_trains_its_short_last_batch_but_times_only_the_full_ones(monkeypatch):
    # 3 full batches of 32 and one of 7: the 7 are trained, but their new shape (a recompile under --compile,
    # an autotune under cudnn.benchmark) stays out of the steady state
    cfg = make_config(arch="resnet-20", dataset="synthetic", image_size=16, num_classes=10, batch_size=32,
                      synthetic_train_size=32 * 3 + 7, synthetic_val_size=32, warmup_steps=0)
    step, loaders = synthetic_step("cpu", cfg, breakdown_every=1)
    timers = []

    class Recorded(loop.EpochTimer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            timers.append(self)

    monkeypatch.setattr(loop, "EpochTimer", Recorded)
    result = loop.train_one_epoch(step, loaders.train, cfg, SingleProcess(DistContext()), tqdm(disable=True))
    assert result.images == 103
    assert timers[0].timing.images == 96
    assert result.metrics["breakdown_steps"] == 3


def test_steps_end_an_epoch_early_on_any_data_set():
    cfg = make_config(arch="resnet-20", dataset="synthetic", image_size=16, num_classes=10, batch_size=8,
                      synthetic_train_size=8 * 5, synthetic_val_size=8, steps=2)
    step, loaders = synthetic_step("cpu", cfg)
    assert len(loaders.train) == 5
    result = loop.train_one_epoch(step, loaders.train, cfg, SingleProcess(DistContext()), tqdm(disable=True))
    assert result.images == 2 * 8


@pytest.mark.parametrize("impl, host_reads", [("fused", 0), ("for-loop", 1), ("foreach", 1)])
def test_fp16_steps_read_the_loss_scalers_inf_check_on_the_host_only_without_fused_sgd(impl, host_reads,
                                                                                       monkeypatch):
    """What the README states: torch's GradScaler skips a step on the device only for an optimizer that can
    (fused SGD); for the others it reads found_inf with ``.item()``, on CUDA a host synchronisation per step."""
    step, loaders = synthetic_step("cpu", make_config(
        arch="resnet-20", dataset="synthetic", image_size=16, num_classes=10, batch_size=8, synthetic_train_size=16,
        synthetic_val_size=8, precision="fp16", sgd_impl=impl))
    images, labels = next(iter(loaders.train))
    step(images, labels)  # the first step creates the optimizer's state
    reads, item = [], torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda tensor: reads.append(1) or item(tensor))
    step(images, labels)
    assert len(reads) == host_reads


# ---- CUDA ----

def synthetic_step(device: str, cfg=None, breakdown_every: int = 0, **settings):
    """The engine's model, optimizer and Step on on-device synthetic batches, as ``loop.run`` builds them."""
    cfg = cfg or make_config(arch="resnet-20", dataset="synthetic", image_size=16, num_classes=10, batch_size=32,
                             synthetic_train_size=32 * 12, synthetic_val_size=32, **settings)
    ctx = DistContext(device=torch.device(device))
    torch.manual_seed(0)
    loaders = build_loaders(cfg.data, ctx)
    model, _ = builders.build_model(cfg, loaders.spec)
    model.to(ctx.device, memory_format=torch.channels_last if cfg.data.channels_last else torch.preserve_format)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    step = builders.Step(builders.maybe_compile(model, cfg), builders.build_optimizer(model, cfg, 1, ctx.device),
                         scaler, builders.autocast(cfg.precision, ctx.device),
                         StepBreakdown(ctx.device, breakdown_every, cfg.warmup_steps))
    return step, loaders


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_steps_do_not_synchronise_the_host(precision):
    step, loaders = synthetic_step("cuda", breakdown_every=2, precision=precision, channels_last=True)
    sums = torch.zeros(2, dtype=torch.float64, device="cuda")
    batches = step.breakdown.iterate(loaders.train, len(loaders.train))
    for _ in range(3):  # cuDNN autotuning and lazy initialisation may synchronise: not in the steady state
        step(*next(batches))
    torch.cuda.set_sync_debug_mode("error")
    try:
        for images, labels in batches:  # sampled and unsampled steps, accumulating as train_one_epoch does
            loss, logits = step(images, labels)
            sums += torch.stack([loss * len(labels), (logits.argmax(1) == labels).sum()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.optimizer.defaults["fused"] is True
    torch.cuda.synchronize()
    assert step.breakdown.summary(SingleProcess(DistContext(device=torch.device("cuda"))),
                                  EpochTiming(seconds=1.0))["breakdown_steps"] > 0


@pytest.mark.gpu
def test_bf16_channels_last_compiled_follows_the_fp32_loss_curve():
    def curve(**settings) -> list[float]:
        step, loaders = synthetic_step("cuda", **settings)
        images, labels = next(iter(loaders.train))
        return [step(images, labels)[0].item() for _ in range(6)]

    fp32 = curve()
    fast = curve(precision="bf16", channels_last=True, compile=True)
    assert fp32[-1] < 0.7 * fp32[0]  # it trains, so the curves say something
    assert max(abs(a - b) for a, b in zip(fp32, fast)) <= 0.15 * fp32[0], (fp32, fast)


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    return launched_run(Workspace(tmp_path_factory.mktemp("cuda")), "--device", "cuda")


@pytest.mark.gpu
def test_breakdown_from_cuda_events_adds_up_to_the_step_time(cuda_run):
    assert_breakdown_adds_up(cuda_run.data.metrics)
    assert cuda_run.data.params["sgd_impl"] == "fused"


@pytest.mark.gpu
def test_system_metrics_include_the_gpu(cuda_run):
    assert f"system/{socket.gethostname()}/gpu_0_utilization_percentage" in system_metric_names(cuda_run)
