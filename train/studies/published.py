"""Published figures cnnbench is held against, read from ``train/reference/*.csv`` (sources in each file)."""
from __future__ import annotations

import csv
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"


def read_reference(name: str) -> list[dict[str, str]]:
    """Rows of ``reference/<name>.csv`` as dicts; '#' lines are the file's citation and notes."""
    with open(REFERENCE_DIR / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))
