"""The run configuration: one typed structure, one argument parser, one precedence rule.

Precedence: dataclass defaults < ``--recipe`` < flags given on the command line; with ``--resume`` the
checkpoint's saved configuration takes the place of defaults and recipe. Launchers add only their own
flags on top of ``get_args_parser()`` (used as an argparse parent).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field

from dataloaders import DATASETS, LOADERS, DataConfig
from train.engine.recipes import RECIPES
from train.errors import UsageError

PRECISIONS = ("fp32", "fp16", "bf16")
SCHEDULES = ("multistep", "cosine", "constant")
LR_SCALINGS = ("none", "linear")
DEVICES = ("auto", "cpu", "cuda")
SGD_IMPLS = ("auto", "fused", "foreach", "for-loop")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "resnet-20"
    data: DataConfig = field(default_factory=DataConfig)
    recipe: str | None = None
    epochs: int = 5
    lr: float = 0.1
    lr_scaling: str = "none"
    sync_bn: bool = False
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    dropout: float | None = None
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"
    device: str = "auto"
    threads: int | None = None
    deterministic: bool = False
    warmup_steps: int = 5
    window_steps: int | None = None  # None: about a tenth of an epoch's timed steps, at most 20
    sgd_impl: str = "auto"
    max_batch_size: int | None = None
    breakdown_every: int = 10
    peak_tflops: float | None = None
    peak_cache: str | None = None
    remeasure_peak: bool = False
    system_metrics: bool | None = None  # None: on for multi-process jobs
    checkpoint_dir: str = "checkpoints"
    resume: str | None = None
    stop_after: int | None = None
    target_top1_err: float | None = None  # time to accuracy: the top-1 validation error (%) to reach
    stop_at_target: bool = False
    tracking_uri: str | None = None
    experiment: str = "cnnbench"
    tracking_grace_s: float = 120.0
    run_name: str | None = None
    tags: tuple[str, ...] = ()  # KEY=VALUE

    def to_dict(self) -> dict:
        """Flat ``{field: value}`` of every setting, data fields included (for logging and checkpoints)."""
        flat = {k: v for k, v in dataclasses.asdict(self).items() if k != "data"}
        return {**flat, **dataclasses.asdict(self.data)}

    @property
    def run_tags(self) -> dict[str, str]:
        """The ``--tag KEY=VALUE`` pairs, as MLflow run tags (a later KEY wins)."""
        return dict(tag.split("=", 1) for tag in self.tags)


_DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"data"}
DEFAULTS = TrainConfig()  # quoted in --help


def make_config(**values) -> TrainConfig:
    """Build a config from flat ``field=value`` pairs; an unknown key is an error, not a silent no-op."""
    unknown = set(values) - _DATA_FIELDS - _TRAIN_FIELDS
    if unknown:
        raise UsageError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}  # argparse nargs, JSON
    data = DataConfig(**{k: v for k, v in values.items() if k in _DATA_FIELDS})
    cfg = TrainConfig(data=data, **{k: v for k, v in values.items() if k in _TRAIN_FIELDS})
    _check(cfg)
    return cfg


def _check(cfg: TrainConfig) -> None:
    if cfg.schedule == "multistep" and any(m <= 0 or m > cfg.epochs for m in cfg.milestones):
        raise UsageError(f"--milestones {list(cfg.milestones)} must lie within 1..{cfg.epochs} (--epochs)")
    if cfg.stop_after is not None and cfg.stop_after >= cfg.epochs:
        raise UsageError(f"--stop-after {cfg.stop_after} must be less than --epochs {cfg.epochs}")
    if cfg.target_top1_err is not None and cfg.target_top1_err > 100:
        raise UsageError(f"--target-top1-err {cfg.target_top1_err:g} is an error in %: give a value in 0..100")
    if cfg.stop_at_target and cfg.target_top1_err is None:
        raise UsageError("--stop-at-target needs --target-top1-err (the top-1 validation error to stop at)")
    for flag, value, meaning in (("--momentum", cfg.momentum, "the fraction of the last update kept"),
                                 ("--dropout", cfg.dropout, "the fraction of activations dropped")):
        if value is not None and not 0 <= value < 1:
            raise UsageError(f"{flag} {value:g} must lie in [0, 1): {meaning}")
    if cfg.tracking_uri == "":
        raise UsageError("--tracking-uri is empty: give a store's URI, or leave the flag out for "
                         "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")


def config_from_args(args: argparse.Namespace, saved: dict | None = None) -> TrainConfig:
    """Merge defaults (or a resumed run's ``saved`` config), the recipe, and the flags actually given."""
    given = {k: v for k, v in vars(args).items() if k in _DATA_FIELDS | _TRAIN_FIELDS}
    if saved is not None:
        for key in ("arch", "dataset"):
            if key in given and given[key] != saved[key]:
                raise UsageError(f"--{key} {given[key]} differs from the checkpoint's {saved[key]!r}")
        return make_config(**{**saved, **given})
    recipe_name = given.get("recipe")
    if recipe_name is not None and recipe_name not in RECIPES:
        raise UsageError(f"unknown recipe {recipe_name!r}; choose from {', '.join(RECIPES)}")
    return make_config(**{**RECIPES.get(recipe_name, {}), **given})


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line with the one prefix every cnnbench error has (no usage dump),
    exit code 2, and takes no abbreviations: ``--epoch 3`` is an error, not a silent ``--epochs 3``."""

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def error(self, message: str):
        from train.engine.distributed import launched_rank, let_rank0_report_first  # every rank parses the same flags

        if launched_rank() != 0:
            let_rank0_report_first()
            self.exit(2)
        self.exit(2, f"cnnbench: error: {message} (see {self.prog} --help)\n")


def _number(kind, strictly_positive: bool):
    """An argparse ``type`` accepting numbers > 0 (or >= 0), reported in one line otherwise."""
    bound = "> 0" if strictly_positive else ">= 0"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (it must be {bound})")
        if value < 0 or (strictly_positive and value == 0):
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"
    return parse


pos_int, pos_float = _number(int, True), _number(float, True)
nonneg_int, nonneg_float = _number(int, False), _number(float, False)


def key_value(text: str) -> str:
    """An argparse ``type`` for ``KEY=VALUE``; KEY limited to the characters MLflow accepts in tag names."""
    key, sep, _ = text.partition("=")
    if not sep or not re.fullmatch(r"[\w./: -]+", key):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (KEY: letters, digits, _ - . / : space)")
    return text


def get_args_parser() -> argparse.ArgumentParser:
    """The engine's flags; launchers use it as a parent parser and add only their own."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    D, dd = DEFAULTS, DEFAULTS.data

    g = p.add_argument_group("model and data")
    g.add_argument("--arch", help=f"model name, see `python -m train.models` (default: {D.arch})")
    g.add_argument("--dataset", choices=DATASETS, help=f"data set (default: {dd.dataset})")
    g.add_argument("--data-dir", help=f"data root: holds cifar-10-batches-py, cifar-100-python, or "
                   f"train/ and val/ for imagenet (default: {dd.data_dir})")
    g.add_argument("--download", action="store_true", help="download CIFAR into --data-dir if missing")
    g.add_argument("--loader", choices=LOADERS, help=f"data loading backend (default: {dd.loader})")
    g.add_argument("--workers", type=nonneg_int, help=f"loader worker processes per rank (default: {dd.workers})")
    g.add_argument("--loader-threads", type=pos_int,
                   help=f"--loader dali: CPU threads per rank (default: {dd.loader_threads})")
    g.add_argument("--prefetch", type=pos_int,
                   help=f"--loader dali: batches prepared ahead per rank (default: {dd.prefetch})")
    g.add_argument("--image-size", type=pos_int,
                   help="synthetic data: image side (default: the arch's own, 32 for the CIFAR nets, the native crop "
                        "of an ImageNet net, e.g. 224)")
    g.add_argument("--num-classes", type=pos_int,
                   help="synthetic data: classes (default: 10 for the CIFAR nets, 1000 for ImageNet nets)")
    g.add_argument("--synthetic-train-size", type=pos_int,
                   help="synthetic data: training images per epoch, all processes (default: --steps batches per "
                        "process, else 10 on a CPU, 100 on a GPU: a CIFAR net's CPU run takes about a minute)")
    g.add_argument("--synthetic-val-size", type=pos_int,
                   help="synthetic data: validation images, all processes (default: 2 batches per process)")
    g.add_argument("--steps", type=pos_int,
                   help="training steps per epoch and process, warm-up included, on any data set (an epoch ends "
                        "there); for synthetic data also its size: a throughput run needs no arithmetic "
                        "(default: the whole data set)")
    g.add_argument("--dropout", type=nonneg_float, help="dropout rate, for nets that have one (e.g. wrn-*)")

    g = p.add_argument_group("optimisation (SGD with momentum)")
    g.add_argument("--recipe", help=f"named preset, overridden by any flag given: {', '.join(RECIPES)}")
    g.add_argument("--epochs", type=pos_int, help=f"epochs to train (default: {D.epochs})")
    g.add_argument("--batch-size", type=pos_int, help=f"training batch per process (default: {dd.batch_size})")
    g.add_argument("--val-batch-size", type=pos_int, help="evaluation batch per process (default: --batch-size)")
    g.add_argument("--lr", type=pos_float, help=f"initial learning rate (default: {D.lr})")
    g.add_argument("--momentum", type=nonneg_float, help=f"SGD momentum (default: {D.momentum})")
    g.add_argument("--weight-decay", "--wd", type=nonneg_float, help=f"L2 weight decay (default: {D.weight_decay})")
    g.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule, per epoch (default: {D.schedule})")
    g.add_argument("--milestones", type=pos_int, nargs="+", help="multistep: epochs at which lr *= --gamma")
    g.add_argument("--gamma", type=pos_float, help=f"multistep: lr factor at each milestone (default: {D.gamma})")
    g.add_argument("--seed", type=nonneg_int, help=f"seed of weights, data order and augmentation (default: {dd.seed})")

    g = p.add_argument_group("speed")
    g.add_argument("--precision", choices=PRECISIONS,
                   help=f"autocast dtype; fp16 adds loss scaling (default: {D.precision})")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and batches")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"),
                   help=f"torch.compile mode (default: {D.compile_mode})")
    g.add_argument("--device", choices=DEVICES, help=f"auto = this rank's GPU if CUDA is there (default: {D.device})")
    g.add_argument("--threads", type=pos_int,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS if set, else on CPU the cores this process "
                        "may use divided among the job's processes on its node; on CUDA torch's choice)")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (slower on GPU): with the same seed, a resumed or "
                        "restarted job ends with the same weights as an uninterrupted one")
    g.add_argument("--warmup-steps", type=nonneg_int,
                   help=f"steps at each epoch start left out of images/s (default: {D.warmup_steps})")
    g.add_argument("--window-steps", type=pos_int,
                   help="steps per timing window; images/s median and spread are over windows (default: about a "
                        "tenth of an epoch's timed steps, at most 20, so that short runs get a spread too)")
    g.add_argument("--sgd-impl", choices=SGD_IMPLS,
                   help=f"SGD kernels; auto = fused (one kernel for all parameters) on CUDA, torch's for-loop on "
                        f"CPU (default: {D.sgd_impl})")
    g.add_argument("--max-batch-size", type=pos_int,
                   help="instead of --batch-size: the largest batch per process that fits the device, trying "
                        "this one first and halving on out-of-memory (logged as batch_size_search)")

    g = p.add_argument_group("what each run explains: step-time breakdown, MFU, system metrics")
    g.add_argument("--breakdown-every", type=pos_int,
                   help=f"the step-time breakdown samples the 1st and every N-th steady-state step of an epoch "
                        f"(default: {D.breakdown_every})")
    g.add_argument("--peak-tflops", type=pos_float,
                   help="one device's peak TFLOP/s at --precision, for mfu_pct (default: the GPU's rated dense "
                        "peak from NVIDIA's datasheets; on CPU the measured one)")
    g.add_argument("--peak-cache", metavar="FILE",
                   help="JSON file of measured peaks (default: ~/.cache/cnnbench/peak_flops.json)")
    g.add_argument("--remeasure-peak", action="store_true",
                   help="measure the peak of --peak-cache again (for mfu_measured_peak_pct) and replace the cached one")
    g.add_argument("--system-metrics", action=argparse.BooleanOptionalAction,
                   help="MLflow system metrics (CPU, memory, GPU utilisation, GPU memory, power), recorded by "
                        "one process per node (default: on for multi-process jobs)")

    g = p.add_argument_group("time to accuracy (MLPerf-style)")
    g.add_argument("--target-top1-err", type=nonneg_float, metavar="PCT",
                   help="the first epoch whose top-1 validation error is at or below PCT logs time_to_target_s "
                        "(wall seconds from run start to the end of that evaluation, as MLPerf counts them; "
                        "training alone in train_time_to_target_s), epochs_to_target and images_to_target; the tag "
                        "cnnbench.target says whether and when it was reached")
    g.add_argument("--stop-at-target", action="store_true",
                   help="end the run FINISHED at the epoch that reaches --target-top1-err")

    g = p.add_argument_group("checkpoints and tracking")
    g.add_argument("--checkpoint-dir", help=f"checkpoints go to DIR/<run id>/ (default: {D.checkpoint_dir})")
    g.add_argument("--resume", help="checkpoint file, or a run's checkpoint folder (its newest epoch)")
    g.add_argument("--stop-after", type=pos_int,
                   help="stop cleanly after this many epochs of the schedule (for time-limited job slots); "
                        "continue later with --resume")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    g.add_argument("--experiment", help=f"MLflow experiment name (default: {D.experiment})")
    g.add_argument("--tracking-grace-s", type=nonneg_float,
                   help=f"if the tracking server went away, how long the finished run waits for it before "
                        f"leaving its writes in a file for `cnnbench sync` (default: {D.tracking_grace_s:g})")
    g.add_argument("--run-name", help="MLflow run name (default: arch, data set, batch per process and precision, "
                                      "then nhwc, the loader and launcher×processes where they apply, e.g. "
                                      "'resnet18 imagenet b128 bf16 nhwc ddp×4')")
    g.add_argument("--tag", dest="tags", action="append", type=key_value, metavar="KEY=VALUE",
                   help="set this tag on the MLflow run; repeatable (`cnnbench suite` tags suite and grid point)")
    return p
