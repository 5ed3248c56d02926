"""``python -m train.models`` (``cnnbench models``): the table and the CSV carry the same columns and figures."""
from __future__ import annotations

import csv
import io
import re
import subprocess
import sys

import pytest

from train.models import complexity, forward_flops_per_image, list_models, resolve_model
from train.models._registry import _build_unallocated
from train.models.__main__ import FAMILY_CLASSES, HEADINGS, main
from train.studies.figures import significant

PATTERN = "resnet[-1][28]*"  # resnet-20 (CIFAR) and resnet18 (torchvision): one net of each source, quick to count
NETS = {"resnet-20": ("cifar", 32), "resnet18": ("torchvision", 224)}


def listing(capsys, *flags: str) -> str:
    assert main([PATTERN, *flags]) == 0
    return capsys.readouterr().out


def table_rows(text: str) -> list[list[str]]:
    """The table's lines split at its column gaps (two spaces or more; a summary has single spaces)."""
    lines = text.splitlines()[1:]  # below the line that says what the figures are
    return [re.split(r" {2,}", line.strip()) for line in lines if line.strip()]


def test_csv_has_every_column_of_the_table_and_its_figures_unrounded(capsys):
    header, *rows = list(csv.reader(io.StringIO(listing(capsys, "--format", "csv"))))
    table_header, *table = table_rows(listing(capsys))
    assert header == table_header == list(HEADINGS)
    assert [row[0] for row in rows] == [row[0] for row in table] == list(NETS)
    for row, shown in zip(rows, table):
        fields = dict(zip(HEADINGS, row))
        entry = resolve_model(fields["name"])
        params, flops = complexity(entry, FAMILY_CLASSES[entry.family])
        assert (fields["source"], int(fields["input"])) == NETS[fields["name"]]
        assert (float(fields["params (M)"]), float(fields["GFLOPs"]), float(fields["GMACs"])) == (
            params / 1e6, flops / 1e9, flops / 2e9)
        # the table: the same row, its figures to 3 significant digits
        assert shown == [*row[:3], *(significant(float(v)) for v in row[3:6]), row[6]]


def test_unknown_source_is_one_line_and_exit_2():
    done = subprocess.run([sys.executable, "-m", "train.models", "--source", "cifar,caffe"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert "--source: 'caffe' is not a source; give cifar, torchvision, timm (comma-separated) or all" in done.stderr
    assert done.stderr.count("\n") == 1


def test_each_net_is_listed_with_its_own_head_unless_a_dataset_is_given(capsys):
    def params(*flags: str) -> dict[str, float]:
        assert main(["resnet[-5][20]*", "--format", "csv", *flags]) == 0
        _, *rows = csv.reader(io.StringIO(capsys.readouterr().out))
        return {row[0]: float(row[3]) for row in rows}

    # resnet50 has 25.557032 M parameters with ImageNet's 1000-class head, 23.528522 M with a 10-class one
    assert params() == {"resnet-20": 0.272474, "resnet50": 25.557032}
    assert params("--dataset", "cifar10") == {"resnet-20": 0.272474, "resnet50": 23.528522}


def test_library_names_are_in_natural_order():
    names = [e.name for e in list_models("resnet*", ("torchvision",))]
    assert names == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", ["resnet-164", "densenet121"])
def test_counting_without_batch_norm_layers_gives_the_flops_of_the_whole_net(name):
    entry = resolve_model(name)  # BatchNorm layers are left out of the count, as torch's counter gives them 0
    whole = forward_flops_per_image(_build_unallocated(entry, 10), entry.input_size)
    assert complexity(entry, 10)[1] == whole
