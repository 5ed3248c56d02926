"""Checkpoints: written atomically (temp file, fsync, rename), read with ``weights_only=True``.

A run's checkpoints live in ``<checkpoint-dir>/<run id>/epoch-NNNN.pt``; the newest two are kept, so a
crash while writing one never leaves the run without a complete checkpoint.
"""
from __future__ import annotations

import os
import re
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
    """Note which run a torchrun job trains, so that its workers, restarted by torchrun, continue that run."""
    root.mkdir(parents=True, exist_ok=True)
    pointer = _job_pointer(root, job_id)
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.write_text(run_id)
    os.replace(tmp, pointer)


def job_run(root: Path, job_id: str) -> str | None:
    """The id of the run that torchrun job ``job_id`` trains, once rank 0 has opened it."""
    pointer = _job_pointer(root, job_id)
    return pointer.read_text().strip() if pointer.is_file() else None


def _job_pointer(root: Path, job_id: str) -> Path:
    return root / f"torchrun-{job_id}.run"


def has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and bool(_checkpoints(folder))


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
    except Exception as err:  # garbage bytes can make torch's readers raise nearly anything ("hello": KeyError 101)
        # torch's own message is advice about weights_only for files one trusts: not what a corrupt file needs
        raise UsageError(f"--resume {path}: not a readable cnnbench checkpoint (torch.load: {type(err).__name__}); "
                         f"give a run's folder or one of its epoch-NNNN.pt files") from None
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise UsageError(f"--resume {path}: not a cnnbench checkpoint (no config/model entries)")
    return payload
