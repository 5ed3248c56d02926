"""The pretrained-ImageNet ranking: ``cnnbench evaluate`` runs ranked by Acc@1 and by Acc@5, beside the
"Reproducible ImageNet Benchmarking for Keras and PyTorch" ranking (train/reference/imagenet_pretrained_ranking.csv).

Only runs over one validation set are ranked together: that of the newest evaluation (its image count);
of several runs of one net with the same weights, the newest counts. Beside a published Acc@1, a reproduction
verdict: reproduced where it lies in the measured Acc@1's 95 % interval over the evaluated images, better or worse
where that interval lies above or below it (``stats.accuracy_interval``: fixed weights give the same figure on
every repeat, so the noise is the sample of images, and one run is enough).
"""
from __future__ import annotations

import functools
from pathlib import Path

from train.errors import UsageError
from train.studies import stats
from train.studies.published import read_reference
from train.studies.reports.common import finished_runs_with, markdown_table, run_flags

REFERENCE = "imagenet_pretrained_ranking"
STUDY = "Reproducible ImageNet Benchmarking for Keras and PyTorch (Keras 2.2.4, PyTorch 1.0)"
VERDICTS = {0: "reproduced", 1: "better", -1: "worse"}  # the measured Acc@1's interval holds, lies above, below


@functools.cache
def published_accuracy() -> dict[str, dict]:
    """Registry net (``source/name``) -> the reference ranking's row for it: ``acc1``, ``acc5`` (%), ``platform``.

    Where both frameworks ranked a net, the PyTorch row: its weights are the ones torchvision publishes.
    """
    from train.models import resolve_model

    rows = sorted(read_reference(REFERENCE), key=lambda r: r["platform"] != "pytorch")
    found: dict[str, dict] = {}
    for row in rows:
        try:
            net = resolve_model(row["model"], prefer="imagenet").qualified_name
        except UsageError:  # a net no library implements (nasnetmobile): nothing to compare with
            continue
        found.setdefault(net, {"acc1": float(row["acc1"]), "acc5": float(row["acc5"]), "platform": row["platform"],
                               "model": row["model"]})
    return found


def evaluation_runs(runs) -> list:
    """Finished evaluations, newest first."""
    return finished_runs_with(runs, "eval_top1_acc")


def render(runs, out_dir: Path) -> Path:
    evaluated = evaluation_runs(runs)
    if not evaluated:
        raise UsageError("no finished `cnnbench evaluate` runs in this experiment: nothing to rank")
    val_size = evaluated[0].data.params["val_size"]
    ranked = _newest_per_net([r for r in evaluated if r.data.params["val_size"] == val_size])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "imagenet.md"
    path.write_text(_markdown(ranked, val_size, _left_out(runs, evaluated, val_size)))
    return path


def _newest_per_net(runs: list) -> list:
    seen, kept = set(), []
    for run in runs:
        key = (run.data.params["arch_resolved"], run.data.params["weights"])
        if key not in seen:
            seen.add(key)
            kept.append(run)
    return kept


def ranks(values: list[float]) -> list[int]:
    """Rank 1 for the highest value; equal values share the better rank (1, 2, 2, 4)."""
    return [1 + sum(other > v for other in values) for v in values]


def _markdown(runs: list, val_size: str, left_out: list[str]) -> str:
    acc1 = [r.data.metrics["eval_top1_acc"] for r in runs]
    acc5 = [r.data.metrics["eval_top5_acc"] for r in runs]
    published = published_accuracy()
    rows = []
    for run, r1, r5 in sorted(zip(runs, ranks(acc1), ranks(acc5)), key=lambda t: (t[1], t[2])):
        m, p = run.data.metrics, run.data.params
        ref = published.get(p["arch_resolved"])
        rows.append([r1, r5, p["arch"], p["arch_resolved"], p["weights"], f"{m['eval_top1_acc']:.2f}",
                     f"{m['eval_top5_acc']:.2f}", f"{m['eval_top1_err']:.2f}", f"{m['eval_top5_err']:.2f}",
                     f"{ref['acc1']:.2f} / {ref['acc5']:.2f} ({ref['platform']} {ref['model']})" if ref else "–",
                     reproduction(m["eval_top1_acc"], int(val_size), ref["acc1"]) if ref else "–"])
    table = markdown_table(["rank Acc@1", "rank Acc@5", "arch", "net", "weights", "Acc@1 %", "Acc@5 %",
                            "top-1 err %", "top-5 err %", "published Acc@1 / Acc@5 %",
                            "Acc@1 vs published [95 % CI over the images]"], rows)
    return "\n\n".join([
        "# Pretrained ImageNet nets: Acc@1 and Acc@5",
        f"{len(runs)} nets evaluated by `cnnbench evaluate` over the same {val_size} validation images, each "
        f"through its own published preprocessing; {_environment(runs)}.",
        table,
        f"Published: the ranking of *{STUDY}* (train/reference/{REFERENCE}.csv), on the full 50,000-image "
        "ImageNet-1k validation set with those frameworks' 2019 weights; torchvision and timm have republished "
        "some weights since, so differences are expected where `weights` is newer. Acc@1 vs published: "
        "reproduced where the published Acc@1 lies in the measured one's exact (Clopper-Pearson) 95 % interval "
        f"over these {val_size} images, better or worse where the interval lies above or below it; an "
        "evaluation of fixed weights repeats exactly, so its noise is the sample of images, and one run suffices.",
        *left_out,
    ]) + "\n"


def reproduction(accuracy_pct: float, images: int, published_pct: float) -> str:
    interval = stats.accuracy_interval(accuracy_pct, images)
    return f"{VERDICTS[stats.side_of(interval, published_pct)]} [{interval.low:.2f}–{interval.high:.2f}]"


def _environment(runs: list) -> str:
    """Hardware and versions of the runs, each distinct value once."""
    def distinct(param: str) -> str:
        return ", ".join(sorted({r.data.params.get(param, "?") for r in runs}))

    return (f"device {distinct('device_name')}, torch {distinct('torch_version')}, "
            f"torchvision {distinct('torchvision_version')}, timm {distinct('timm_version')}, "
            f"cnnbench {distinct('git_sha')}")


def _left_out(runs, evaluated: list, val_size: str) -> list[str]:
    notes = []
    other_sets = [r for r in evaluated if r.data.params["val_size"] != val_size]
    if other_sets:
        notes.append(f"Left out: {len(other_sets)} finished evaluations over validation sets of another size.")
    unfinished = [r for r in runs if "eval_top1_acc" not in r.data.metrics and r.data.params.get("weights")]
    for run in unfinished:
        notes.append(f"Left out: {run.data.params.get('arch')} ({'; '.join(run_flags(run)) or 'no accuracy'}).")
    return notes
