"""Checkpoints: written atomically (temp file, fsync, rename), read with ``weights_only=True``.

A run's checkpoints live in ``<checkpoint-dir>/<run id>/epoch-NNNN.pt``; the newest two are kept, so a
crash while writing one never leaves the run without a complete checkpoint.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from train.errors import UsageError

KEEP = 2
_NAME = re.compile(r"epoch-(\d{4,})\.pt$")


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.pt"


def save_checkpoint(folder: Path, epoch: int, payload: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(folder, epoch)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(folder)
    for old in _checkpoints(folder)[:-KEEP]:
        old.unlink()
    return final


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _NAME.fullmatch(p.name))


def remember_job_run(root: Path, job_id: str, run_id: str) -> None:
    """Note which run a torchrun job trains, so that its workers, restarted by torchrun, find its checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    pointer = root / f"torchrun-{job_id}.run"
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.write_text(run_id)
    os.replace(tmp, pointer)


def job_checkpoint_folder(root: Path, job_id: str) -> Path | None:
    """The checkpoint folder of the run that torchrun job ``job_id`` trains, if it has a checkpoint yet."""
    pointer = root / f"torchrun-{job_id}.run"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if folder.is_dir() and _checkpoints(folder) else None


def find_checkpoint(path: str) -> Path:
    """A checkpoint file as given, or the newest ``epoch-*.pt`` of a run's folder."""
    p = Path(path)
    if p.is_dir():
        found = _checkpoints(p)
        if not found:
            raise UsageError(f"--resume {path}: no epoch-*.pt checkpoint in this folder")
        return found[-1]
    if not p.is_file():
        raise UsageError(f"--resume {path}: no such checkpoint file or folder")
    return p


def load_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise UsageError(f"--resume {path}: not a readable cnnbench checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise UsageError(f"--resume {path}: not a cnnbench checkpoint (no config/model entries)")
    return payload
