"""``python -m train.models`` (``cnnbench models``): the table and the CSV carry the same columns and figures."""
from __future__ import annotations

import csv
import io
import re
import subprocess
import sys

from train.models import complexity, resolve_model
from train.models.__main__ import HEADINGS, main
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
        params, flops = complexity(resolve_model(fields["name"]), 10)
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
