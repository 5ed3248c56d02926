"""A resumed run follows the settings it is resumed with, and its run-level figures cover every segment of it.

In-process runs of the single launcher on tiny synthetic data; the equivalence matrix (test_equivalence.py) holds
the same paths against uninterrupted runs on every launcher.
"""
from __future__ import annotations

import math

import pytest
import torch

from launchers import single
from tests.workspace import Workspace
from train.engine import loop
from train.engine.checkpoint import find_checkpoint, load_checkpoint
from train.engine.measure import EpochTimer, Window
from train.engine.mfu import Peak, Peaks
from train.engine.tracking import MlflowTracker
from train.errors import UsageError

TINY = ["--dataset", "synthetic", "--image-size", "32", "--num-classes", "10", "--synthetic-train-size", "64",
        "--synthetic-val-size", "32", "--batch-size", "16", "--warmup-steps", "0", "--threads", "1"]


def train(ws: Workspace, *flags: str) -> None:
    assert single.main([*ws.flags(), *TINY, *flags]) == 0


def resume(ws: Workspace, *flags: str) -> None:
    (run,) = ws.runs()
    train(ws, "--resume", str(ws.root / "ckpt" / run.info.run_id), *flags)


def logged(ws: Workspace, metric: str) -> list[tuple[int, float]]:
    (run,) = ws.runs()
    return [(m.step, m.value) for m in ws.history(run.info.run_id, metric)]


def script_window_seconds(patch: pytest.MonkeyPatch, seconds: list[float]) -> None:
    """Each timing window the run closes takes the next of ``seconds`` as its wall time: windows of known, unequal
    lengths, where the median window's images/s and all steady-state images / all their seconds differ."""
    script = iter(seconds)
    close = EpochTimer._close_window

    def scripted(timer: EpochTimer, window: Window) -> None:
        close(timer, window._replace(seconds=next(script)))

    patch.setattr(EpochTimer, "_close_window", scripted)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path)


def test_more_epochs_on_resume_extend_the_cosine_schedule(ws):
    train(ws, "--epochs", "2", "--lr", "0.1", "--schedule", "cosine")
    resume(ws, "--epochs", "4")
    cosine = [0.1 * (1 + math.cos(math.pi * k / 2)) / 2 for k in range(2)]  # over the first 2 epochs
    cosine += [0.1 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(2, 4)]  # then over 4
    assert [step for step, _ in logged(ws, "lr")] == [1, 2, 3, 4]
    assert [lr for _, lr in logged(ws, "lr")] == pytest.approx(cosine, rel=1e-12)
    (run,) = ws.runs()
    assert run.data.params["epochs"] == "2"  # params are immutable: the tag says what the run resumed with
    assert run.data.tags["cnnbench.resumed.epoch-2"] == "epochs: 2 -> 4"


def test_new_milestones_and_optimizer_settings_given_on_resume_replace_the_checkpoints(ws):
    train(ws, "--epochs", "3", "--stop-after", "1", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "1e-4",
          "--schedule", "multistep", "--milestones", "3")
    resume(ws, "--lr", "0.04", "--momentum", "0.5", "--weight-decay", "0", "--milestones", "2")
    assert [lr for _, lr in logged(ws, "lr")] == pytest.approx([0.1, 0.04, 0.004], rel=1e-12)
    (run,) = ws.runs()
    group = load_checkpoint(find_checkpoint(str(ws.root / "ckpt" / run.info.run_id)))["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["weight_decay"]) == (0.5, 0.0)
    changes = run.data.tags["cnnbench.resumed.epoch-1"]
    assert changes == "lr: 0.1 -> 0.04; momentum: 0.9 -> 0.5; weight_decay: 0.0001 -> 0.0; milestones: (3,) -> (2,)"


def test_run_level_figures_cover_every_segment_of_a_resumed_run(ws, monkeypatch):
    peaks = iter([700.0, 300.0])  # MiB: the first segment's epoch needs more memory than the second's
    monkeypatch.setattr(loop, "peak_memory_mib", lambda device: next(peaks))
    train(ws, "--epochs", "2", "--stop-after", "1")
    resume(ws)
    (run,) = ws.runs()
    assert run.info.status == "FINISHED"
    assert run.data.metrics["peak_mem_mib"] == 700.0
    epochs = [v for _, v in logged(ws, "epoch_time_s")]
    evals = [v for _, v in logged(ws, "eval_time_s")]
    assert len(epochs) == len(evals) == 2
    assert run.data.metrics["train_time_s"] == pytest.approx(sum(epochs) + sum(evals), rel=1e-9)


def test_peak_memory_leaves_out_what_start_up_probes_allocated(ws, monkeypatch):
    def probe_that_allocates(*args, **kwargs):
        spike = torch.ones(512 * 2**20 // 4)  # 512 MiB, touched page by page, as a large probe would be
        del spike
        return Peaks(Peak(1.0, "given (--peak-tflops)"), Peak(1.0, "cached"))

    before = loop.peak_memory_mib(torch.device("cpu"))
    monkeypatch.setattr(loop, "job_peaks", probe_that_allocates)
    train(ws, "--epochs", "1")
    (run,) = ws.runs()
    # the tiny run itself needs a few MiB more than the process held before; the probe's 512 MiB are not its
    assert run.data.metrics["peak_mem_mib"] < before + 256


def test_a_job_killed_between_its_target_epochs_checkpoint_and_the_target_tag_gets_the_tag_when_resumed(
        ws, monkeypatch):
    def killed_at_the_target_tag(self, tags):
        if loop.TARGET_TAG in tags:
            raise KeyboardInterrupt  # SIGINT just after the checkpoint of the epoch that reached the target
        real_set_tags(self, tags)

    real_set_tags = MlflowTracker.set_tags
    monkeypatch.setattr(MlflowTracker, "set_tags", killed_at_the_target_tag)
    with pytest.raises(KeyboardInterrupt):
        train(ws, "--epochs", "2", "--target-top1-err", "100")  # any error is <= 100 %: reached at epoch 1
    (run,) = ws.runs()
    assert run.info.status == "KILLED" and loop.TARGET_TAG not in run.data.tags
    monkeypatch.setattr(MlflowTracker, "set_tags", real_set_tags)
    resume(ws, "--target-top1-err", "100")
    (run,) = ws.runs()
    assert run.data.tags[loop.TARGET_TAG].startswith("reached at epoch 1 after ")
    assert run.data.metrics["epochs_to_target"] == 1


def test_a_target_first_given_at_resume_is_held_against_the_epochs_before_it(ws):
    train(ws, "--epochs", "3", "--stop-after", "2")
    resume(ws, "--target-top1-err", "100")  # any error is <= 100 %: epoch 1, of the first segment, reached it
    (run,) = ws.runs()
    m = run.data.metrics
    assert (m["epochs_to_target"], m["images_to_target"]) == (1, 64)
    assert m["train_time_to_target_s"] == logged(ws, "epoch_time_s")[0][1]
    assert m["time_to_target_s"] > m["train_time_to_target_s"] + logged(ws, "eval_time_s")[0][1]
    assert run.data.tags[loop.TARGET_TAG].startswith("reached at epoch 1 after ")


def test_a_run_resumed_with_other_window_steps_numbers_every_window_and_sums_both_segments_steady_state(
        ws, monkeypatch):
    """Every window keeps its own step; and the checkpoint carries the first segment's steady-state images and
    seconds, so the run's images/s is an uninterrupted run's: all its images over all its seconds, not the last
    segment's (64 / 10 s) nor the median window's (16 images/s)."""
    script_window_seconds(monkeypatch, [1.0, 1.0, 1.0, 4.0, 2.0, 8.0])
    train(ws, "--epochs", "2", "--stop-after", "1", "--window-steps", "1")  # 4 steps of 16 images: 4 windows
    resume(ws, "--window-steps", "2")  # 2 windows of 32 images
    windows = logged(ws, "train_images_per_sec_window")
    assert windows == [(1, 16.0), (2, 16.0), (3, 16.0), (4, 4.0), (5, 16.0), (6, 4.0)]
    (run,) = ws.runs()
    assert run.data.metrics["train_images_per_sec"] == (64 + 64) / (7.0 + 10.0)


def test_resuming_with_stop_at_target_past_the_target_is_refused_in_one_line(ws):
    train(ws, "--epochs", "3", "--stop-after", "1")
    with pytest.raises(UsageError, match=r"^epoch 1 of the checkpoint already reached --target-top1-err 100: "):
        resume(ws, "--target-top1-err", "100", "--stop-at-target")
