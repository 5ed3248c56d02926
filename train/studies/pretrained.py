"""Published ImageNet weights and each net's own evaluation preprocessing, for ``cnnbench evaluate``.

Weights come from the library that publishes them: torchvision's ``DEFAULT`` weights from torch hub's cache
(``$TORCH_HOME/hub/checkpoints``), timm's default tag from the Hugging Face cache (or torch hub's, for the few
timm weights still served by URL); ``download=True`` lets the library fetch what is missing. A file given
instead (``load_file``) is a state dict, a cnnbench checkpoint or a ``.safetensors`` file, loaded into the
registry's net for the folder's classes. Every ``torch.load`` is ``weights_only=True``, torchvision's own too.

Preprocessing is the net's own data contract, never a generic 224/256 pipeline: torchvision's
``weights.transforms()`` (resize, crop, interpolation, mean/std of the published weights), or timm's
``resolve_data_config`` + ``create_transform`` (input size, crop_pct, interpolation, mean/std).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import nn

from train.errors import UsageError
from train.models import ModelEntry, create_model, resolve_model

TIMM_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a Hugging Face repo, in order


@dataclass(frozen=True)
class Preprocessing:
    transform: Callable  # PIL image -> normalised float tensor (C, H, W)
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __str__(self) -> str:
        return " ".join(repr(self.transform).split())


@dataclass(frozen=True)
class EvalModel:
    model: nn.Module
    arch_resolved: str
    num_classes: int
    weights: str  # where the weights came from, for the run's params
    preprocessing: Preprocessing


def imagenet_entry(arch: str) -> ModelEntry:
    """The torchvision or timm net ``arch`` names; CIFAR nets have no published ImageNet weights or input size."""
    entry = resolve_model(arch, prefer="imagenet")
    if entry.family != "imagenet":
        raise UsageError(f"arch {arch} is a CIFAR net: this command takes ImageNet nets (torchvision or timm)")
    return entry


def published_classes(entry: ModelEntry) -> int:
    """Classes of the net's published default weights."""
    if entry.source == "torchvision":
        return len(_torchvision_weights(entry.name).meta["categories"])
    return _timm_cfg(entry.name).num_classes


def load_published(entry: ModelEntry, download: bool) -> EvalModel:
    """The net with its library's default published weights, from the local cache (or fetched if ``download``)."""
    if entry.source == "torchvision":
        return _torchvision_published(entry, download)
    return _timm_published(entry, download)


def load_file(entry: ModelEntry, path: str, num_classes: int) -> EvalModel:
    """The registry's net for ``num_classes`` with the weights of ``path``, and the net's published preprocessing."""
    model = create_model(entry.qualified_name, num_classes, prefer="imagenet")
    try:
        model.load_state_dict(_read_state_dict(Path(path)))
    except RuntimeError as err:
        raise UsageError(f"--weights {path} does not fit {entry.qualified_name} with {num_classes} classes: "
                         f"{_first_line(err)}") from None
    return EvalModel(model, entry.qualified_name, num_classes, f"file {Path(path).resolve()}",
                     _preprocessing(entry, model))


def _torchvision_weights(name: str):
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT


def _torchvision_published(entry: ModelEntry, download: bool) -> EvalModel:
    import torchvision

    weights = _torchvision_weights(entry.name)
    # where torch.hub.load_state_dict_from_url, which torchvision calls, keeps the file
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not cached.is_file() and not download:
        raise _not_cached(entry, str(cached), weights.url)
    with _loading_published(entry, weights.url, cached), _weights_only_loads():
        model = torchvision.models.get_model(entry.name, weights=weights)
    return EvalModel(model, entry.qualified_name, len(weights.meta["categories"]),
                     f"torchvision {weights} ({cached})", _preprocessing(entry, model))


@contextlib.contextmanager
def _weights_only_loads():
    """torchvision's builders, and timm's before 1.0.26, read the cached file with ``torch.load(weights_only=False)``:
    torch's documented switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` makes that load ``weights_only=True`` as well."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def _timm_cfg(name: str):
    import timm

    cfg = timm.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UsageError(f"timm publishes no weights for {name}; give a file with --weights PATH")
    return cfg


def _timm_published(entry: ModelEntry, download: bool) -> EvalModel:
    import timm

    cfg = _timm_cfg(entry.name)
    cached, looked_for, source = _timm_cached_file(cfg)
    if cached is None and not download:
        raise _not_cached(entry, looked_for, source)
    overlay = {"file": cached, "source": ""} if cached else None  # timm < 1.0.26 reads a "file" weights_only=False
    with _loading_published(entry, source, looked_for), _weights_only_loads():
        model = timm.create_model(entry.name, pretrained=True, pretrained_cfg_overlay=overlay)
    tag = f"{entry.name}.{cfg.tag}" if cfg.tag else entry.name
    return EvalModel(model, entry.qualified_name, cfg.num_classes, f"timm {tag} ({cached or source})",
                     _preprocessing(entry, model))


def _timm_cached_file(cfg) -> tuple[str | None, str, str]:
    """(cached file or None, what was looked for, where it is published) for timm's pretrained config."""
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        for filename in TIMM_HF_FILES:
            # the folder named below; huggingface_hub before 0.25 fixed its default when it was imported
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str):
                return found, found, f"https://huggingface.co/{cfg.hf_hub_id}"
        folder = Path(constants.HF_HUB_CACHE) / f"models--{cfg.hf_hub_id.replace('/', '--')}" / "snapshots" / "*"
        return None, f"{folder / TIMM_HF_FILES[0]} (or {TIMM_HF_FILES[1]})", f"https://huggingface.co/{cfg.hf_hub_id}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
    return (str(cached) if cached.is_file() else None), str(cached), cfg.url


def _not_cached(entry: ModelEntry, looked_for: str, source: str) -> UsageError:
    return UsageError(f"--pretrained {entry.qualified_name}: no cached weights, looked for {looked_for}; "
                      f"fetch them with --download (from {source}), or give a file with --weights PATH")


@contextlib.contextmanager
def _loading_published(entry: ModelEntry, source: str, destination):
    """A download that fails (offline, refused) or a cached file that is damaged is the user's to fix: one line."""
    try:
        yield
    except OSError as err:  # URLError, HTTP errors, timeouts, and huggingface_hub's errors are OSErrors
        raise UsageError(f"--pretrained {entry.qualified_name}: cannot fetch {source} to {destination}: "
                         f"{getattr(err, 'reason', err)}") from None
    except (RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
        raise UsageError(f"--pretrained {entry.qualified_name}: cannot load {destination}: "
                         f"{_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _preprocessing(entry: ModelEntry, model: nn.Module) -> Preprocessing:
    """The evaluation transform of the net's published weights."""
    if entry.source == "torchvision":
        t = _torchvision_weights(entry.name).transforms()
        return Preprocessing(t, t.crop_size[0], tuple(t.mean), tuple(t.std))
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=model)
    return Preprocessing(create_transform(**config, is_training=False), config["input_size"][-1],
                         tuple(config["mean"]), tuple(config["std"]))


def _read_state_dict(path: Path) -> dict:
    """A plain state dict, a cnnbench checkpoint (its ``model``) or a ``.safetensors`` file."""
    if not path.is_file():
        raise UsageError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(path)
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, SafetensorError) as err:
        raise UsageError(f"--weights {path}: not a readable weights file ({type(err).__name__}: "
                         f"{_first_line(err)})") from None
    if not isinstance(payload, dict):
        raise UsageError(f"--weights {path}: holds a {type(payload).__name__}, not a state dict")
    return payload["model"] if "model" in payload and "config" in payload else payload
