"""Reports: MLflow runs in, a Markdown table and PNG plots out, shaped like the published tables.

One module per report kind, each with ``render(runs, out_dir) -> Path``: ``runs`` is a list of
``mlflow.entities.Run`` (all runs of one experiment, any status), and ``render`` writes ``<kind>.md``
and its PNGs into ``out_dir`` and returns the Markdown's path. Shared pieces (flags for runs that must
not be mixed in silently, Markdown tables) are in ``common``.
"""
from __future__ import annotations

# kind -> what it reads; its module, train/studies/reports/<kind>.py, is imported on demand (matplotlib and mlflow
# are slow to import)
KINDS = {
    "cifar": "CIFAR-10/100 training runs (final_val_top1_err and best_val_top1_err, num_params, time_to_target_s), beside the published "
             "errors of train/reference/cifar_*.csv",
    "throughput": "runs that logged train_images_per_sec: images/s by device, arch, data, batch, memory format, "
                  "precision and workers, speed-ups and scaling efficiency",
    "imagenet": "cnnbench evaluate runs (eval_top1_acc, eval_top5_acc), ranked beside the published ranking",
    "complexity": "cnnbench analyze runs (parameters, FLOPs, latency, images/s, memory), with the Acc@1 of "
                  "cnnbench evaluate runs of the same experiment, else the published one",
    "frameworks": "cnnbench framework runs (param task), beside the published figures of the two studies",
}
