"""What every report needs: which runs to flag, and Markdown tables."""
from __future__ import annotations

SPREAD_LIMIT_PCT = 10.0  # timing windows that disagree by more than this make a throughput figure suspect


def run_flags(run) -> list[str]:
    """Why a figure from ``run`` must be marked in a report (empty when it can be trusted)."""
    flags = []
    if run.info.status != "FINISHED":
        flags.append(f"run {run.info.status.lower()}")
    spread = run.data.metrics.get("train_images_per_sec_spread")
    if spread is not None and spread == spread and spread > SPREAD_LIMIT_PCT:  # NaN: fewer than two windows
        flags.append(f"windows spread {spread:.0f} %")
    return flags


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
