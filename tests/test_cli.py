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


@pytest.mark.parametrize("pattern", ["RESNET-20", "ResNet-2?", "resnet-20"])
def test_model_names_match_whatever_their_case_in_every_list(pattern, capsys):
    from train.cli import main

    with pytest.raises(SystemExit) as done:
        main(["models", pattern, "--format", "csv"])
    assert done.value.code == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()] == ["name", "resnet-20"]


@pytest.mark.parametrize("pattern, line", [
    ("zzz*", "cnnbench: error: no net of cifar, torchvision matches 'zzz*'; --source all lists timm's nets too"),
    ("RESNT-11*", "cnnbench: error: no net of cifar, torchvision matches 'RESNT-11*' (close: resnet-110"),
])
def test_a_pattern_that_matches_no_net_is_one_line_and_exit_2(pattern, line, capsys):
    from train.cli import main

    with pytest.raises(SystemExit) as done:
        main(["models", pattern])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == "" and err.count("\n") == 1 and err.startswith(line), err
