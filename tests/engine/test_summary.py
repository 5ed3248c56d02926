"""What a run tells the person who started it: the epoch's progress bar, the summary's epochs, cautions and how to go
on (issue 23)."""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import pytest
from tqdm import tqdm

from dataloaders import DatasetSpec
from tests.engine.test_bad_input import launch_here
from tests.engine.test_performance import synthetic_step
from train.context import DistContext
from train.engine import loop
from train.engine.config import get_args_parser, make_config
from train.engine.distributed import SingleProcess
from train.engine.launch import format_summary
from train.engine.schema import TRUSTED_SPREAD_PCT, is_trusted_spread
from train.engine.tracking import quiet_mlflow


def test_the_progress_bar_of_an_epoch_knows_its_total():
    cfg = make_config(arch="resnet-20", dataset="synthetic", image_size=16, num_classes=10, batch_size=8,
                      synthetic_train_size=8 * 5, synthetic_val_size=8, steps=3)
    step, loaders = synthetic_step("cpu", cfg)
    shown = io.StringIO()
    bar = tqdm(file=shown, disable=False, mininterval=0)
    loop.train_one_epoch(step, loaders.train, cfg, SingleProcess(DistContext()), bar)
    assert bar.total == 3
    assert "100%" in shown.getvalue() and "3/3" in shown.getvalue()  # a percentage, and so a time left


def summary(epochs_done: int, spread: float = 2.0, status: str = "FINISHED",
            checkpoint: Path | None = Path("ckpt/abc/epoch-0006.pt")) -> loop.RunSummary:
    metrics = {"final_val_top1_err": 9.0, "best_val_top1_err": 8.5, "final_val_top5_err": 1.0,
               "train_images_per_sec": 100.0, "epoch_images_per_sec_spread": spread, "data_wait_frac": 0.1,
               "num_params": 270_000, "flops_per_image": 41e6, "peak_mem_mib": 300.0, "train_time_s": 12.0,
               "startup_time_s": 1.0}
    return loop.RunSummary("abc", status, "sqlite:///mlflow.db", metrics, checkpoint, epochs_done)


def row(text: str, name: str) -> str:
    return next(line.split(name, 1)[1].strip() for line in text.splitlines() if line.strip().startswith(name))


def test_a_run_stopped_at_its_target_says_how_many_epochs_of_those_planned_it_ran():
    cfg = make_config(epochs=6, target_top1_err=10.0, stop_at_target=True)
    assert row(format_summary(cfg, summary(3)), "epochs") == "3 of 6 planned"
    assert row(format_summary(cfg, summary(6)), "epochs") == "6"


def test_a_run_stopped_after_an_epoch_says_how_to_continue_it():
    cfg = make_config(epochs=4, stop_after=1)
    text = format_summary(cfg, summary(1, status="KILLED", checkpoint=Path("ckpt/abc/epoch-0001.pt")))
    assert row(text, "to continue") == f"--resume {Path('ckpt/abc')}"
    assert "to continue" not in format_summary(make_config(epochs=4), summary(4))


@pytest.mark.parametrize("spread, shown", [
    (2.0, "2.0 %;"),
    (TRUSTED_SPREAD_PCT, "10.0 %;"),
    (109.2, "109.2 %: over 10 %, not to be trusted;"),
    (math.nan, "n/a: one timing window, steadiness unknown;"),
])
def test_the_summary_cautions_against_an_untrustworthy_spread(spread, shown):
    images_per_sec = row(format_summary(make_config(epochs=6), summary(6, spread)), "train images/s")
    assert images_per_sec.startswith(f"100.0 (the run's steady-state images / seconds; the last epoch's spread "
                                     f"{shown[:-1]}, data wait")


def test_one_threshold_says_which_spreads_to_trust():
    assert [is_trusted_spread(s) for s in (0.0, 10.0, 10.01, math.nan)] == [True, True, False, False]


def test_the_run_name_help_shows_what_the_default_makes():
    cfg = make_config(arch="resnet18", dataset="imagenet", batch_size=128, precision="bf16", channels_last=True)
    spec = DatasetSpec("imagenet", 1000, 224, (0.5,) * 3, (0.5,) * 3, 10, 10)
    name = loop._default_run_name(cfg, DistContext(world_size=4, launcher="ddp"), spec)
    help_text = next(a.help for a in get_args_parser()._actions if "--run-name" in a.option_strings)
    assert name == "resnet18 imagenet b128 bf16 nhwc ddp×4" and f"'{name}'" in help_text


def test_mlflow_says_only_warnings_unless_asked_for_more(monkeypatch):
    mlflow_log = logging.getLogger("mlflow")
    before = mlflow_log.level
    try:
        mlflow_log.setLevel(logging.INFO)  # MLflow's own default
        monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
        quiet_mlflow()
        assert mlflow_log.level == logging.WARNING
        mlflow_log.setLevel(logging.DEBUG)
        monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")
        quiet_mlflow()
        assert mlflow_log.level == logging.DEBUG
    finally:
        mlflow_log.setLevel(before)


@pytest.mark.slow
def test_an_interrupted_run_says_how_to_continue(ws, capsys, monkeypatch):
    real = loop._epoch_figures

    def interrupted_in_epoch_2(epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt("Ctrl-C")
        return real(epoch, *args)

    monkeypatch.setattr(loop, "_epoch_figures", interrupted_in_epoch_2)
    proc = launch_here(ws, capsys, "--epochs", "3", "--steps", "1", "--batch-size", "32")
    run_id = ws.runs()[0].info.run_id
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 130 and lines[-1] == "cnnbench: interrupted"
    said = f"stopped in epoch 2: continue after epoch 1 with --resume {ws.root / 'ckpt' / run_id}"
    assert [line for line in lines if line.endswith(said)], proc.stderr
