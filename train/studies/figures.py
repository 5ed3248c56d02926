"""How the studies print a measured figure: with the precision it carries, whatever its size.

A fixed number of decimals prints 3.95 images/s as 4.0 (or 3.9) and 12,345.678 as 12345.7: too little where the
figure is small, noise where it is large. Three significant digits keep the same relative precision (0.1 % to 1 %)
at every size, and a figure never loses digits of its integer part.
Percentages (errors, accuracies) differ: their precision is absolute, 0.01 points, as the published tables give it.
"""
from __future__ import annotations

import math

DIGITS = 3


def significant(value: float, digits: int = DIGITS) -> str:
    """``value`` with ``digits`` significant digits, all of its integer part kept: 3.95, 39.5, 395, 3954, 0.0412.

    Not finite: ``nan``, ``inf``.
    """
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    rounded = float(f"{value:.{digits - 1}e}")  # first, so that 9.996 becomes 10.0 and not 10.00
    magnitude = math.floor(math.log10(abs(rounded)))
    if magnitude >= digits - 1:
        return f"{value:.0f}"
    return f"{rounded:.{digits - 1 - magnitude}f}"


def percent(value: float) -> str:
    """A percentage (an error, an accuracy) to 0.01 points: 6.43, 93.57."""
    return f"{value:.2f}"
