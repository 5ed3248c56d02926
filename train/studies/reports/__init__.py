"""Reports: MLflow runs in, a Markdown table and PNG plots out, shaped like the published tables.

One module per report kind, each with ``render(runs, out_dir) -> Path``: ``runs`` is a list of
``mlflow.entities.Run`` (all runs of one experiment, any status), and ``render`` writes ``<kind>.md``
and its PNGs into ``out_dir`` and returns the Markdown's path. Shared pieces (flags for runs that must
not be mixed in silently, Markdown tables) are in ``common``.
"""
from __future__ import annotations

# kind -> module of this package, imported on demand (matplotlib and mlflow are slow to import)
KINDS = {
    "cifar": "cifar",
    "throughput": "throughput",
    "imagenet": "imagenet",
    "complexity": "complexity",
    "frameworks": "frameworks",
}
