"""Acc@1 and Acc@5 of ImageNet nets over a validation folder: one MLflow run per net, then a ranking.

  cnnbench evaluate --arch resnet50 densenet121 inception_v3 --pretrained --data-dir /data/imagenet
  cnnbench evaluate --arch resnet18 --weights resnet18-finetuned.pt --data-dir /data/flowers

Reads DATA_DIR/val/CLASS/IMAGE (the ImageFolder layout) through each net's own preprocessing: its native
resolution, resize and crop ratio, interpolation, mean and std. Class folders named by ImageNet-1k synsets
(n01440764, ...) are scored against the synset's output, so a subset of ImageNet's classes works; other
folders are taken in sorted order and must be as many as the net's outputs. Top-1 and top-5 counts are summed
over the whole folder, each image once, as the training engine evaluates.

The experiment's evaluations end as a ranking table by Acc@1 and by Acc@5, beside the published ranking;
it is printed and written to --out as imagenet.md.
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import torch

from dataloaders import DataConfig, DatasetSpec
from dataloaders.imagenet import image_folder
from dataloaders.sharding import val_indices
from dataloaders.torch_loader import TorchLoader
from train.context import DistContext
from train.engine import loop
from train.engine.builders import autocast
from train.engine.config import DEVICES, PRECISIONS, OneLineErrorParser, nonneg_int, pos_int
from train.engine.distributed import SingleProcess, pick_device
from train.engine.environment import environment_params
from train.engine.launch import setup_logging
from train.engine.tracking import MlflowTracker, open_store, tracking_uri
from train.errors import UsageError
from train.models import ModelEntry
from train.studies.helptext import LaidOutHelp
from train.studies.pretrained import EvalModel, imagenet_entry, load_file, load_published, published_classes
from train.studies.report import OUT, experiment_runs, writable_folder
from train.studies.reports import imagenet

log = logging.getLogger("cnnbench")
EXPERIMENT = "imagenet"  # shared with `cnnbench analyze`, whose plots use the accuracies measured here


def main(argv: list[str] | None = None, prog: str = "cnnbench evaluate") -> int:
    args = _parser(prog).parse_args(argv)
    if args.weights and len(args.arch) > 1:
        raise UsageError("--weights gives one file: evaluate one --arch with it")
    if args.download and not args.pretrained:
        raise UsageError("--download fetches published weights: it goes with --pretrained")
    setup_logging(is_main=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    val_dir = Path(args.data_dir) / "val"
    classes = image_folder(val_dir, transform=None).classes
    entries = [imagenet_entry(arch) for arch in args.arch]  # every name checked before any work
    uri = tracking_uri(args.tracking_uri)
    open_store(uri)  # and the store: an unreachable one fails now, not after the first net
    writable_folder(args.out, "--out")  # and where the ranking goes
    for arch, entry in zip(args.arch, entries):
        net = _load(entry, args, classes)
        _evaluate(net, arch, val_dir, args, device, uri)
    print(imagenet.render(experiment_runs(uri, args.experiment), Path(args.out)).read_text())
    return 0


def _load(entry: ModelEntry, args: argparse.Namespace, classes: list[str]) -> EvalModel:
    """The weights before the run: a net whose weights cannot be had opens no run."""
    if args.weights:
        return load_file(entry, args.weights, outputs_for_folder(classes))
    output_indices(classes, published_classes(entry))  # a folder the published weights cannot score fails here
    return load_published(entry, args.download)


def _evaluate(net: EvalModel, arch: str, val_dir: Path, args: argparse.Namespace, device: torch.device,
              uri: str) -> None:
    ctx = DistContext(device=device, launcher="single")
    prep = net.preprocessing
    dataset = image_folder(val_dir, prep.transform)
    dataset.target_transform = output_indices(dataset.classes, net.num_classes).__getitem__
    spec = DatasetSpec("imagenet", net.num_classes, prep.image_size, prep.mean, prep.std, 0, len(dataset))
    loader = TorchLoader(dataset, val_indices(len(dataset), ctx), args.batch_size, args.workers,
                         DataConfig(channels_last=args.channels_last), ctx)
    memory_format = torch.channels_last if args.channels_last else torch.preserve_format
    model = net.model.to(device, memory_format=memory_format)
    tracker = MlflowTracker(uri, args.experiment)
    with tracker.run(f"{arch}-eval", _params(net, arch, args, spec, device), {**vars(args), "arch": arch}) as end:
        val = loop.evaluate(model, loader, autocast(args.precision, device), SingleProcess(ctx), spec)
        metrics = accuracy_metrics(val)
        tracker.log_metrics(metrics, step=0)
        end.reason = f"evaluated all {len(dataset)} images of {val_dir}"
    log.info("%s (%s): Acc@1 %.2f %%, Acc@5 %.2f %% over %d images in %.1f s; run %s", arch, net.weights,
             metrics["eval_top1_acc"], metrics["eval_top5_acc"], len(dataset), val["eval_time_s"], tracker.run_id)


def accuracy_metrics(val: dict) -> dict:
    """The engine's errors over the whole folder, as the accuracies the reference ranking uses, and both errors."""
    return {"eval_top1_acc": 100 - val["val_top1_err"], "eval_top5_acc": 100 - val["val_top5_err"],
            "eval_top1_err": val["val_top1_err"], "eval_top5_err": val["val_top5_err"]}


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synsets (WordNet ids) in the order of the nets' outputs."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def outputs_for_folder(classes: list[str]) -> int:
    """Outputs a net needs for these class folders: ImageNet-1k's 1000 if they are synsets, else one per folder."""
    return len(imagenet_synsets()) if set(classes) <= set(imagenet_synsets()) else len(classes)


def output_indices(classes: list[str], num_outputs: int) -> list[int]:
    """The net's output index for each class folder, in ImageFolder's (sorted) order."""
    synsets = imagenet_synsets()
    if num_outputs == len(synsets) and set(classes) <= set(synsets):
        return [synsets.index(c) for c in classes]
    if len(classes) != num_outputs:
        raise UsageError(f"the validation folder has {len(classes)} class folders, not named by ImageNet-1k "
                         f"synsets (n01440764, ...), but the net has {num_outputs} outputs; name the folders by "
                         f"synset or give as many folders as outputs")
    return list(range(num_outputs))


def _params(net: EvalModel, arch: str, args: argparse.Namespace, spec: DatasetSpec, device: torch.device) -> dict:
    return {
        "arch": arch, "arch_resolved": net.arch_resolved, "weights": net.weights,
        "preprocessing": str(net.preprocessing),
        "dataset": spec.name, "num_classes": spec.num_classes, "image_size": spec.image_size,
        "val_size": spec.val_size, "val_batch_size": args.batch_size, "workers": args.workers,
        "precision": args.precision, "channels_last": args.channels_last, "framework": "pytorch",
        **environment_params(device),
    }


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description=__doc__, formatter_class=LaidOutHelp)
    p.add_argument("--arch", nargs="+", required=True, help="ImageNet nets (torchvision, timm, or reference names)")
    p.add_argument("--data-dir", required=True, help="holds val/<class>/<image> (ImageFolder layout)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", action="store_true",
                        help="the library's published default weights, from its local cache")
    source.add_argument("--weights", metavar="PATH",
                        help="a state dict, cnnbench checkpoint or .safetensors file for the one --arch")
    p.add_argument("--download", action="store_true", help="with --pretrained: fetch weights missing from the cache")
    p.add_argument("--batch-size", type=pos_int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--workers", type=nonneg_int, default=2, help="image decoding processes (default: 2)")
    add_device_and_tracking_flags(p, out_help="where the ranking table imagenet.md goes")
    return p


def add_device_and_tracking_flags(p: argparse.ArgumentParser, out_help: str) -> None:
    """The flags `cnnbench evaluate` and `cnnbench analyze` share: where the nets run and where results go."""
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto = the GPU if CUDA is there (default)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast dtype (default: fp32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and inputs")
    p.add_argument("--threads", type=pos_int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", default=EXPERIMENT, help=f"MLflow experiment (default: {EXPERIMENT})")
    p.add_argument("--out", default=OUT, help=f"{out_help} (default: {OUT}, which git ignores)")
