"""The metrics schema: every name a run may log, with its unit, how it is aggregated, and its step.

One table, read by the MLflow tracker (which refuses undeclared names), the summary printout and,
later, reports and other frameworks' engines. Errors are in percent; step "epoch" metrics are logged
with step = epoch number (1-based); step "window" metrics with step = the place of a steady-state timing window in
the run (1, 2, ... over every epoch and segment), so a later comparison can resample them; step "run" metrics once
per run (again at the end of each later segment of a stopped and resumed run, then describing the whole run); step
"rank" metrics with each epoch, once per rank R of a job of several, as epoch metrics named ``<name>_rank<R>``
(``at_rank``); step "batch_size" metrics once per run for each batch size B measured, as run metrics named
``<name>_bs<B>`` (``at_batch_size``): a run's metrics then hold every batch size, for reports and for the MLflow
runs table alike.
"""
from __future__ import annotations

from dataclasses import dataclass

# The one training images/s and the one val error of a run: the summary, MLflow, every report and compare show these
TRAIN_IMAGES_PER_SEC = "train_images_per_sec"
VAL_ERROR = "final_val_top1_err"


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    step: str  # "epoch" | "window" | "run" | "batch_size"
    aggregation: str


@dataclass(frozen=True)
class Param:
    name: str
    meaning: str


METRICS: tuple[Metric, ...] = (
    Metric("train_loss", "nats", "epoch", "cross-entropy summed over every training image seen, / images"),
    Metric("train_top1_err", "%", "epoch", "100 * (1 - correct / images) over the epoch, with augmentation"),
    Metric("val_loss", "nats", "epoch", "cross-entropy summed over the whole validation set, / images"),
    Metric("val_top1_err", "%", "epoch", "100 * (1 - top-1 correct / images), whole validation set"),
    Metric("val_top5_err", "%", "epoch", "100 * (1 - top-5 correct / images), whole validation set"),
    Metric("epoch_images_per_sec", "images/s", "epoch", "the epoch's steady-state images (all ranks) / the slowest "
           "rank's steady-state wall seconds, warm-up excluded (the run's figure is train_images_per_sec)"),
    Metric("epoch_images_per_sec_spread", "%", "epoch", "100 * (max - min) / median over the epoch's timing windows"),
    Metric("train_images_per_sec_window", "images/s", "window", "one full steady-state timing window of the job: "
           "all ranks' images of it / the slowest rank's seconds for it, between device synchronisations"),
    Metric("epoch_time_s", "s", "epoch", "wall seconds of the training epoch, warm-up and a short last batch "
           "included"),
    Metric("eval_time_s", "s", "epoch", "wall seconds of the validation pass"),
    Metric("data_wait_frac", "fraction", "epoch", "steady-state seconds blocked on the loader / wall seconds"),
    Metric("lr", "1", "epoch", "learning rate used during the epoch"),
    Metric("amp_skipped_steps", "count", "epoch", "fp16: steps the grad scaler skipped for inf/NaN gradients (every "
           "rank skips the same steps: counted once, the most any rank skipped)"),
    # step-time breakdown (train/engine/breakdown.py): means over the sampled steps of each rank, then over ranks
    Metric("step_time_ms", "ms", "epoch", "steady-state wall seconds / steady-state steps (epoch timer), rank mean"),
    Metric("data_wait_ms", "ms", "epoch", "sampled steps: from asking for the batch to having it (CUDA: device "
           "idle until it arrived)"),
    Metric("forward_ms", "ms", "epoch", "sampled steps: forward pass and loss"),
    Metric("backward_ms", "ms", "epoch", "sampled steps: gradient computation (DDP: until the last bucket is ready)"),
    Metric("allreduce_exposed_ms", "ms", "epoch", "sampled steps: gradient all-reduce not hidden behind backward "
           "(0 for one process)"),
    Metric("optimizer_ms", "ms", "epoch", "sampled steps: optimizer update (and loss-scaler update)"),
    Metric("breakdown_steps", "count", "epoch", "steps sampled for the breakdown, per rank"),
    # stragglers (train/engine/stragglers.py): a job of several ranks logs one per rank R each epoch, busy_ms_rank<R>
    Metric("busy_ms", "ms", "rank", "one rank's own step time: median over its sampled steps of data wait + forward "
           "+ backward + optimizer, the wait for the other ranks in the all-reduce left out"),
    Metric("energy_per_image_j", "J", "epoch", "every rank's GPU energy over its steady-state timing windows (NVML's "
           "total energy counter, read at the windows' synchronised edges), summed, / the job's steady-state images; "
           "not logged without a counter (param energy_counter says why)"),
    Metric("mfu_pct", "%", "epoch", "100 * 3 * flops_per_image * epoch_images_per_sec / (world_size * peak_tflops), "
           "peak_tflops the GPU's rated dense peak at the precision (NaN where unknown; CPU: the measured peak)"),
    Metric("mfu_measured_peak_pct", "%", "epoch", "the same over measured_peak_tflops, the best rate of square "
           "matrix products in the run's dtype measured on the device"),
    Metric("num_params", "count", "run", "trainable and frozen parameters of the model"),
    Metric("flops_per_image", "FLOP", "run", "forward FLOPs for one image (torch.utils.flop_counter; MAC = 2)"),
    # the run's headline figures (TRAIN_IMAGES_PER_SEC, VAL_ERROR): what the summary, every report and compare show
    Metric(TRAIN_IMAGES_PER_SEC, "images/s", "run", "training images/s of the run: its steady-state images (all "
           "ranks) / its steady-state wall seconds (each epoch's slowest rank's), both summed over every epoch and "
           "every segment of a resumed run, warm-up excluded"),
    Metric("train_images_per_sec_per_worker", "images/s", "run", "train_images_per_sec / world_size"),
    Metric(VAL_ERROR, "%", "run", "val error of the run: val_top1_err after the last epoch"),
    Metric("best_val_top1_err", "%", "run", "best epoch's val error: the minimum val_top1_err over the epochs, chosen "
           "on the validation set itself (optimistic; pytorch-classification's \"Best acc\")"),
    Metric("final_val_top5_err", "%", "run", "val_top5_err after the last epoch"),
    Metric("peak_mem_mib", "MiB", "run", "CUDA: max allocated by tensors; CPU: peak resident set size of the process; "
           "from the first epoch's start (start-up probes left out), the most of any rank and of any segment"),
    Metric("peak_mem_reserved_mib", "MiB", "run", "CUDA: max reserved by torch's caching allocator (what out-of-"
           "memory depends on), counted as peak_mem_mib is; not logged on CPU"),
    Metric("gpu_mem_used_mib", "MiB", "run", "NVML: memory used on the rank's GPU at the end of each epoch (torch's "
           "reserved memory, the CUDA context, DALI's and NCCL's own buffers, any other process on it), the most of "
           "any rank, epoch and segment; not logged without NVML"),
    Metric("train_time_s", "s", "run", "epoch_time_s + eval_time_s summed over every epoch of the run, across its "
           "segments when it was stopped and resumed or restarted (an interrupted epoch counts once, as rerun)"),
    Metric("startup_time_s", "s", "run", "wall seconds from the engine's start to run start (tracking store, "
           "batch-size search, peak FLOP/s), summed over the run's segments; never in time_to_target_s"),
    # time to accuracy (--target-top1-err): logged once, when the target is reached
    Metric("time_to_target_s", "s", "run", "as MLPerf Training counts it: wall seconds on a clock never paused from "
           "run start (before the data set is touched) to the end of the evaluation of the first epoch whose "
           "val_top1_err <= target_top1_err, evaluation, checkpoints and logging included; over every segment of "
           "a resumed run, each from its own run start (its start-up apart, in startup_time_s)"),
    Metric("train_time_to_target_s", "s", "run", "training alone: epoch_time_s summed up to and including that "
           "epoch, evaluation excluded"),
    Metric("eval_time_to_target_s", "s", "run", "evaluation alone: eval_time_s summed likewise"),
    Metric("epochs_to_target", "count", "run", "epochs trained up to and including that epoch"),
    Metric("images_to_target", "count", "run", "training images processed by all ranks up to that epoch"),
    Metric("energy_to_target_j", "J", "run", "every rank's GPU energy over the training epochs up to that epoch "
           "(whole epochs, evaluation excluded), where NVML has an energy counter"),
    # framework comparison (train/frameworks)
    Metric("fit_time_s", "s", "run", "wall seconds of the training epochs alone, evaluation excluded"),
    Metric("infer_images_per_sec", "images/s", "run", "forward passes: steady-state images / wall seconds"),
    Metric("infer_images_per_sec_median", "images/s", "run", "median of the inference timing windows' images/s"),
    Metric("infer_images_per_sec_spread", "%", "run", "100 * (max - min) / median over inference timing windows"),
    # complexity analysis (cnnbench analyze): per model, each inference batch size B as <name>_bs<B>
    Metric("latency_median_ms", "ms", "batch_size", "median over timed forward passes of one batch, each "
           "between device synchronisations, warm-up excluded"),
    Metric("latency_p95_ms", "ms", "batch_size", "95th percentile of the same forward-pass times"),
    Metric("forward_images_per_sec", "images/s", "batch_size", "batch size / latency_median_ms"),
    Metric("forward_peak_mem_mib", "MiB", "batch_size", "CUDA: max allocated by tensors during the passes; CPU: "
           "peak resident set size of the process, reset before each batch size"),
    Metric("train_step_images_per_sec", "images/s", "run", "SGD steps (forward, backward, update) at batch_size: "
           "images / wall seconds between device synchronisations, warm-up excluded"),
    # pretrained evaluation (cnnbench evaluate): whole validation folder, each image counted once
    Metric("eval_top1_acc", "%", "run", "Acc@1: 100 * top-1 correct / images"),
    Metric("eval_top5_acc", "%", "run", "Acc@5: 100 * top-5 correct / images"),
    Metric("eval_top1_err", "%", "run", "100 - eval_top1_acc"),
    Metric("eval_top5_err", "%", "run", "100 - eval_top5_acc"),
)

PARAMS: tuple[Param, ...] = (
    Param("arch", "model name as typed"),
    Param("arch_resolved", "source/name the registry built"),
    Param("dataset", "data set"),
    Param("num_classes", "classes of the data set"),
    Param("image_size", "side of the square model input"),
    Param("train_size", "training images, all ranks"),
    Param("val_size", "validation images, all ranks"),
    Param("framework", "training framework"),
    Param("launcher", "single | ddp | horovod"),
    Param("world_size", "processes in the job"),
    Param("backend", "collectives: none (one process) | gloo | nccl"),
    Param("sync_bn", "BatchNorm statistics synchronised across ranks (DDP)"),
    Param("batch_size", "training batch per process"),
    Param("global_batch_size", "batch_size * world_size"),
    Param("val_batch_size", "evaluation batch per process"),
    Param("epochs", "epochs of the schedule"),
    Param("lr", "initial learning rate as given, for one process's batch"),
    Param("lr_scaling", "none | linear (lr * world_size)"),
    Param("lr_scaled", "initial learning rate used, after --lr-scaling"),
    Param("momentum", "SGD momentum"),
    Param("weight_decay", "L2 weight decay"),
    Param("schedule", "learning-rate schedule"),
    Param("milestones", "multistep milestones (epochs)"),
    Param("gamma", "multistep factor"),
    Param("dropout", "dropout rate, where the model has one"),
    Param("recipe", "named preset the config started from"),
    Param("seed", "seed of weights, data order and augmentation"),
    Param("precision", "fp32 | fp16 | bf16 autocast"),
    Param("channels_last", "NHWC memory format"),
    Param("compile", "torch.compile used"),
    Param("compile_mode", "torch.compile mode"),
    Param("sgd_impl", "SGD kernels used: fused | foreach | for-loop"),
    Param("batch_size_search", "how --max-batch-size found batch_size (\"oom at 512 -> 256\"), or off"),
    Param("deterministic", "deterministic algorithms only (torch.use_deterministic_algorithms)"),
    Param("loader", "data loading backend"),
    Param("workers", "loader worker processes per rank"),
    Param("loader_threads", "DALI CPU threads per rank"),
    Param("prefetch", "DALI batches prepared ahead per rank"),
    Param("warmup_steps", "steps per epoch excluded from images/s"),
    Param("window_steps", "steps per timing window"),
    Param("breakdown_every", "the step-time breakdown samples the 1st and every n-th steady-state step"),
    Param("peak_tflops", "one device's rated dense peak TFLOP/s at the run's precision, the denominator of mfu_pct; "
                         "\"n/a: rated peak unknown for NAME\" for a GPU the table does not know"),
    Param("peak_tflops_source", "the datasheet it is rated in, given (--peak-tflops), or on CPU the measured peak"),
    Param("measured_peak_tflops", "one device's best measured TFLOP/s of matrix products, the denominator of "
                                  "mfu_measured_peak_pct"),
    Param("measured_peak_tflops_source", "measured or cached, and how it was measured"),
    Param("system_metrics", "MLflow system metrics recorded (system/<host>/...), one process per node; GPU metrics "
                            "of the node's ranks' GPUs only, as gpu_<NVML index>_..."),
    Param("energy_counter", "where energy_per_image_j comes from (NVML's energy counter), or \"n/a: \" and why"),
    Param("device", "device type the run trained on"),
    Param("device_name", "GPU model, or CPU model"),
    Param("num_threads", "torch CPU threads (framework comparison runs: that framework's threads, in words)"),
    Param("num_threads_source", "why num_threads: --threads, OMP_NUM_THREADS, or on CPU the cores this process may "
          "use divided among the job's processes on its node (train/engine/threads.py)"),
    Param("hostname", "host of rank 0"),
    Param("python_version", "Python version"),
    Param("torch_version", "torch version"),
    Param("torchvision_version", "torchvision version"),
    Param("timm_version", "timm version"),
    Param("mlflow_version", "mlflow version"),
    Param("cuda_version", "CUDA version torch was built with ('none' on CPU builds)"),
    Param("cudnn_version", "cuDNN version, when CUDA is used"),
    Param("git_sha", "commit of cnnbench, '-dirty' when the tree has local changes"),
    Param("checkpoint_dir", "checkpoints root: this run's are in <checkpoint_dir>/<run id>/"),
    Param("target_top1_err", "time-to-accuracy target: top-1 validation error (%) to reach"),
    Param("stop_at_target", "the run ends at the first epoch that reaches the target"),
    # framework comparison (train/frameworks)
    Param("task", "framework comparison task: vgg-cnn | resnet50-train | resnet50-infer"),
    Param("framework_version", "version of the framework that ran the task"),
    Param("model_variant", "what the framework's model is (e.g. ResNet-50 v1 or v1.5)"),
    Param("graph_compile", "what the framework compiled the step into (XLA, hybridize, none)"),
    Param("data_format", "channels_first | channels_last"),
    Param("steps", "synthetic data: steps per epoch, warm-up included"),
    Param("outcome", "measured | unsupported (the reason is in the cnnbench.end tag)"),
    # complexity analysis and pretrained evaluation
    Param("batch_sizes", "inference batch sizes measured"),
    Param("warmup_iters", "untimed passes or steps before each timed series"),
    Param("timed_iters", "timed passes or steps per series"),
    Param("weights", "where the weights came from: torchvision/timm published weights and their file, or a file"),
    Param("preprocessing", "evaluation transform: resize, crop, interpolation, mean and std"),
)

# docs/measurement.md: timing windows whose images/s spread more than this (% of their median) make a figure not to be
# trusted; one window gives no spread (NaN), so nothing says that figure is steady either
TRUSTED_SPREAD_PCT = 10.0


def is_trusted_spread(spread_pct: float) -> bool:
    """Whether a ``*_images_per_sec_spread`` says its figure can be trusted (False for NaN: one window)."""
    return spread_pct <= TRUSTED_SPREAD_PCT  # NaN compares False


METRIC_BY_NAME = {m.name: m for m in METRICS}
PARAM_NAMES = frozenset(p.name for p in PARAMS)
EPOCH_METRICS = frozenset(m.name for m in METRICS if m.step == "epoch")
WINDOW_METRICS = frozenset(m.name for m in METRICS if m.step == "window")
RUN_METRICS = frozenset(m.name for m in METRICS if m.step == "run")
# figures only a GPU gives (torch's CUDA allocator, NVML's counters): a CPU run logs none of them, and says why
GPU_ONLY_METRICS = frozenset({"energy_per_image_j", "energy_to_target_j", "peak_mem_reserved_mib", "gpu_mem_used_mib"})
BATCH_SIZE_METRICS = frozenset(m.name for m in METRICS if m.step == "batch_size")
RANK_METRICS = frozenset(m.name for m in METRICS if m.step == "rank")
_BATCH_SIZE_SUFFIX = "_bs"
_RANK_SUFFIX = "_rank"


def at_batch_size(name: str, batch_size: int) -> str:
    """The run-metric name of a step "batch_size" metric at ``batch_size``: ``latency_median_ms_bs16``."""
    return f"{name}{_BATCH_SIZE_SUFFIX}{batch_size}"


def split_batch_size(logged: str) -> tuple[str, int] | None:
    """(metric, batch size) of a name made by ``at_batch_size``; None for any other name."""
    return _split(logged, _BATCH_SIZE_SUFFIX, BATCH_SIZE_METRICS)


def _split(logged: str, suffix: str, names: frozenset[str]) -> tuple[str, int] | None:
    """(metric, number) of ``<metric><suffix><number>`` where metric is one of ``names``; None otherwise."""
    name, sep, number = logged.rpartition(suffix)
    return (name, int(number)) if sep and name in names and number.isdigit() else None


def is_declared_run_metric(logged: str) -> bool:
    return logged in RUN_METRICS or split_batch_size(logged) is not None


def at_rank(name: str, rank: int) -> str:
    """The epoch-metric name of a step "rank" metric for ``rank``: ``busy_ms_rank1``."""
    return f"{name}{_RANK_SUFFIX}{rank}"


def is_declared_epoch_metric(logged: str) -> bool:
    return logged in EPOCH_METRICS or _split(logged, _RANK_SUFFIX, RANK_METRICS) is not None
