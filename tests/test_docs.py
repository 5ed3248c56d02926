"""Docs that cannot rot: every command block of README.md and docs/*.md marked ```` ```bash runnable ```` runs, as
written, on this CPU.

Each page's runnable blocks run in order, in a fresh folder of their own that holds what a user's checkout holds
(the launchers, benchmarks and suites, linked) and a ``data/`` folder with generated CIFAR-10/100 batches, where the
pages say ``--data-dir data --download`` (a user's first run downloads CIFAR there; this machine has no network, and
``--download`` fetches nothing where the batches are already); the venv's ``python``, ``cnnbench``, ``torchrun`` and ``horovodrun`` come first on PATH.
Blocks not marked runnable need a GPU, a data set, a server or hours.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fakedata import write_cifar10, write_cifar100
from tests.workspace import BIN, REPO

BLOCK = re.compile(r"^```bash runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = ("launchers", "benchmarks", "configs")


def runnable_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


PAGES_WITH_COMMANDS = [page for page in PAGES if runnable_blocks(page)]


def test_the_pages_mark_commands_runnable():
    assert sum(len(runnable_blocks(page)) for page in PAGES) >= 10, "runnable blocks went missing"
    assert REPO / "README.md" in PAGES_WITH_COMMANDS


def test_a_launcher_reading_cifar_from_data_makes_that_folder_itself():
    """The tour never makes ``data/``: a launcher line that reads CIFAR from it must download it (--download)."""
    lines = [line for page in PAGES for block in runnable_blocks(page) for line in block.splitlines()
             if "launchers/" in line and re.search(r"--dataset cifar\d+ .*--data-dir data\b", line)]
    assert lines and all("--download" in line for line in lines), lines


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda page: page.name)
def test_every_runnable_command_of_the_page_runs_as_written(page, tmp_path):
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    write_cifar100(write_cifar10(tmp_path / "data"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    for block in runnable_blocks(page):
        proc = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{page.name}:\n{block}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
