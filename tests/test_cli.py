"""The command line as a newcomer meets it: an instant listing, one error prefix, no silent abbreviations."""
from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workspace import BIN, SINGLE


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*argv], capture_output=True, text=True, timeout=300)


def test_the_listing_imports_nothing_heavy():
    probe = ("import sys\nfrom train import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit as done:\n"
             "    assert done.code == 0\nheavy = {'torch', 'mlflow', 'numpy', 'matplotlib'} & set(sys.modules)\n"
             "print(sorted(heavy))")
    proc = run(sys.executable, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert "commands:" in proc.stdout and proc.stdout.strip().endswith("[]")


def test_the_declared_console_script_is_the_cli_of_this_tree():
    # an installed venv keeps the script of its install: this reads the declaration itself
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parents[1] / "setup.cfg")
    (declared,) = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    name, target = (part.strip() for part in declared.split("="))
    module, function = target.split(":")
    assert name == "cnnbench"
    assert getattr(importlib.import_module(module), function) is importlib.import_module("train.cli").main


def test_an_unknown_command_is_named_with_the_closest_one():
    proc = run(str(BIN / "cnnbench"), "raport")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["cnnbench: error: unknown command 'raport' (did you mean report?); the "
                                        "commands are: models, sync, framework, suite, report, compare, diagnose, "
                                        "scaling, analyze, evaluate"]


@pytest.mark.parametrize("argv, abbreviated", [
    ([sys.executable, str(SINGLE), "--epoch", "3"], "--epoch"),  # would have trained with --epochs 3
    ([str(BIN / "cnnbench"), "report", "cifar", "--exp", "x"], "--exp"),  # --experiment
])
def test_abbreviated_flags_are_refused_in_one_line_with_the_one_prefix(argv, abbreviated):
    proc = run(*argv)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("cnnbench: error: ") and abbreviated in line
