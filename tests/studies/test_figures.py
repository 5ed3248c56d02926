"""Figures printed with the precision they carry: 3 significant digits at any size, never a lost integer digit."""
from __future__ import annotations

import math

import pytest

from train.studies.figures import percent, significant


@pytest.mark.parametrize("value, shown", [
    (3.95, "3.95"),  # a fixed one decimal printed 3.9 (issue 17)
    (3.949, "3.95"),
    (39.54, "39.5"),
    (395.4, "395"),
    (3954.3, "3954"),  # the integer part is kept whole, never 3950
    (123456789.0, "123456789"),
    (0.04123, "0.0412"),
    (0.5, "0.500"),  # the zeros say how precise the figure is
    (9.996, "10.0"),  # rounded up a decade: still 3 digits, not 10.00
    (99.96, "100"),
    (-2.346, "-2.35"),
    (0.0, "0"),
    (math.nan, "nan"),
    (math.inf, "inf"),
])
def test_significant_keeps_three_digits_at_every_size(value, shown):
    assert significant(value) == shown


def test_significant_takes_another_number_of_digits():
    assert (significant(3.14159, digits=2), significant(3.14159, digits=5)) == ("3.1", "3.1416")


def test_percent_is_to_a_hundredth_of_a_point():
    assert (percent(6.4321), percent(93.5), percent(100.0)) == ("6.43", "93.50", "100.00")
