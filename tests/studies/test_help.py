"""The studies' ``--help``: written for people (no reST markup, no Python reprs), every choice listed once, and
the facts a newcomer needs there: the suite file's format, what each report kind reads, where files go."""
from __future__ import annotations

import re
import textwrap

import pytest

from train import cli
from train.studies.helptext import LaidOutHelp
from train.studies.reports import KINDS
from train.studies.suite import load_suite

COMMANDS = (("models",), ("framework",), ("suite",), ("suite", "run"), ("suite", "plan"), ("report",),
            ("compare",), ("analyze",), ("evaluate",), ("sync",))


def help_text(capsys, monkeypatch, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal: the same width for every test run
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def words(text: str) -> str:
    """The text with every run of whitespace as one space: what it says, whatever the wrapping."""
    return " ".join(text.split())


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_no_markup_and_no_python_reprs(capsys, monkeypatch, command):
    text = help_text(capsys, monkeypatch, *command)
    assert "`" not in text  # neither ``reST`` nor `Markdown`
    assert not re.search(r"\{'|\[\]|\bNone\b", text)  # a dict, an empty list, an unset default


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_lists_each_choice_once(capsys, monkeypatch, command):
    text = help_text(capsys, monkeypatch, *command)
    for group in re.findall(r"\{([^{}]*)\}", text):
        choices = group.split(",")
        assert len(choices) == len(set(choices)), group  # `--source {cifar,torchvision,timm,cifar,torchvision,all}`
    for usage_choices in set(re.findall(r"\{[^{}]*\}", text.split("\n\n")[0])):
        assert text.split("\n\n")[0].count(usage_choices) == 1, usage_choices  # `--metric {a,b} [{a,b} ...]`


def test_models_help_names_the_sources_in_words(capsys, monkeypatch):
    text = words(help_text(capsys, monkeypatch, "models"))
    assert "[--source SOURCES]" in text
    assert "comma-separated: cifar, torchvision, timm, or all" in text and "(default: cifar,torchvision)" in text


def test_framework_help_explains_every_option(capsys, monkeypatch):
    text = help_text(capsys, monkeypatch, "framework")
    options = text.split("\noptions:\n", 1)[1]
    undocumented = re.findall(r"^  (--?[\w-]+(?: [^ \n]+)*)\n(?=  -)", options, re.MULTILINE)  # no help beside or under
    assert undocumented == []
    assert ("image layout (default: the framework's own: channels_first for pytorch and mxnet, channels_last for "
            "tensorflow)") in words(text)


def test_suite_help_shows_a_suite_file_that_loads(capsys, monkeypatch, tmp_path):
    text = help_text(capsys, monkeypatch, "suite")
    example = text.split("A suite file (configs/*.yaml):\n\n", 1)[1].split("\n\n", 1)[0]
    (tmp_path / "example.yaml").write_text(textwrap.dedent(example))
    suite = load_suite(tmp_path / "example.yaml")
    assert (suite.name, suite.experiment, suite.size) == (
        "smoke", "smoke-2024", "12 points = repeat 3 × precision 2 × model 2")
    assert "cnnbench suite run configs/smoke.yaml" in text and "git ignores suite-logs/" in words(text)


def test_report_help_says_what_each_kind_reads(capsys, monkeypatch):
    text = words(help_text(capsys, monkeypatch, "report"))
    for kind, reads in KINDS.items():
        assert f" {kind} {words(reads)} " in text
    assert "(default: reports, which git ignores)" in text


@pytest.mark.parametrize("command", [("report",), ("analyze",), ("evaluate",)], ids=" ".join)
def test_default_output_folders_are_ignored_by_git(capsys, monkeypatch, command):
    from tests.workspace import REPO

    assert "(default: reports, which git ignores)" in words(help_text(capsys, monkeypatch, *command))
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert {"/reports/", "/suite-logs/"} <= set(ignored)  # anchored: train/studies/reports/ is code


def test_laid_out_help_refills_prose_keeps_blocks_and_hangs_list_entries():
    description = ("A first paragraph of prose that is long enough to be refilled to the width, never broken "
                   "at suite-logs/ or --nproc_per_node.\n\n"
                   "  cnnbench suite run configs/smoke.yaml   # an example, kept as written however long it is\n\n"
                   "kinds:\n"
                   "  cifar  what the cifar report reads, wrapped under its own text and not under the term")
    assert LaidOutHelp("prog")._fill_text(description, 40, "") == (
        "A first paragraph of prose that is long\n"
        "enough to be refilled to the width,\n"
        "never broken at suite-logs/ or\n"
        "--nproc_per_node.\n\n"
        "  cnnbench suite run configs/smoke.yaml   # an example, kept as written however long it is\n\n"
        "kinds:\n"
        "  cifar  what the cifar report reads,\n"
        "         wrapped under its own text and\n"
        "         not under the term")
