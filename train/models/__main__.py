"""List the model registry: ``python -m train.models [PATTERN] [--dataset cifar10] [--format csv]``."""
from __future__ import annotations

import argparse
import csv
import sys

from tqdm import tqdm

from train.engine.config import OneLineErrorParser
from train.errors import UsageError
from train.models import UNAVAILABLE, ModelEntry, close_names, complexity, list_models, name_matches
from train.models._registry import SOURCES
from train.studies.figures import significant

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000}
FAMILY_CLASSES = {"cifar": NUM_CLASSES["cifar10"], "imagenet": NUM_CLASSES["imagenet"]}  # each family's own head
# the listing's columns, in order: the table and the CSV are made from the same rows
HEADINGS = ("name", "source", "input", "params (M)", "GFLOPs", "GMACs", "summary")
RIGHT_ALIGNED = ("input", "params (M)", "GFLOPs", "GMACs")
DEFAULT_SOURCES = "cifar,torchvision"


def main(argv: list[str] | None = None, prog: str = "python -m train.models") -> int:
    args = _parser(prog).parse_args(argv)
    entries, unavailable = list_models(args.pattern, args.source), _unavailable(args.pattern)
    if not entries and not unavailable:
        raise UsageError(_no_match(args.pattern, args.source))
    rows = listing(entries, args.dataset)
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(HEADINGS)
        writer.writerows(rows)  # the figures unrounded
        return 0
    heads = (f"{args.dataset}'s {NUM_CLASSES[args.dataset]} classes for every net" if args.dataset else
             f"each net's own head: CIFAR nets {FAMILY_CLASSES['cifar']} classes (CIFAR-10), ImageNet nets "
             f"{FAMILY_CLASSES['imagenet']} (--dataset D: D's classes for every net)")
    print(f"parameters and FLOPs with {heads}; GFLOPs: forward pass of one image at the net's input size; "
          f"GMACs = GFLOPs / 2 (a multiply-add is 2 FLOPs)")
    if rows:
        print(table(rows))
    _print_unavailable(unavailable)
    return 0


def listing(entries: list[ModelEntry], dataset: str | None) -> list[tuple]:
    """One row per net, in ``HEADINGS``' order; the head of ``dataset``'s classes, or without it the net's own."""
    rows = []
    for e in tqdm(entries, desc="counting parameters and FLOPs", disable=None if len(entries) > 50 else True):
        classes = NUM_CLASSES[dataset] if dataset else FAMILY_CLASSES[e.family]
        params, flops = complexity(e, classes)  # timm nets take ~0.2 s each, even on the meta device
        rows.append((e.name, e.source, e.input_size, params / 1e6, flops / 1e9, flops / 2e9, e.summary))
    return rows


def _no_match(pattern: str, sources: tuple[str, ...]) -> str:
    close = close_names(pattern)
    hint = f" (close: {', '.join(close)})" if close else ""
    others = "" if sources == SOURCES else "; --source all lists timm's nets too"
    return f"no net of {', '.join(sources)} matches {pattern!r}{hint}{others}"


def table(rows: list[tuple]) -> str:
    """The rows as aligned text, figures to 3 significant digits and right-aligned."""
    lines = [list(HEADINGS), *([significant(v) if isinstance(v, float) else str(v) for v in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADINGS))]
    right = [heading in RIGHT_ALIGNED for heading in HEADINGS]
    return "\n".join("  ".join(cell.rjust(width) if r else cell.ljust(width)
                               for cell, width, r in zip(line, widths, right)).rstrip() for line in lines)


def _unavailable(pattern: str) -> list[str]:
    return [name for name in UNAVAILABLE if name_matches(name, pattern)]


def _print_unavailable(names: list[str]) -> None:
    if names:
        print("\nnamed in the reference studies, but not available:")
    for name in names:
        print(f"  {name:<26} {UNAVAILABLE[name]}")


def _sources(text: str) -> tuple[str, ...]:
    """``--source``: a comma-separated list of libraries, or all."""
    if text == "all":
        return SOURCES
    asked = tuple(text.split(","))
    unknown = [name for name in asked if name not in SOURCES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not a source; give {', '.join(SOURCES)} "
                                         f"(comma-separated) or all")
    return asked


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description="List every --arch name with its source library, native input "
                           "size, parameters, forward GFLOPs and GMACs, as a table or as CSV (the same columns, "
                           "figures unrounded).")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnet*' (default: all)")
    p.add_argument("--dataset", choices=tuple(NUM_CLASSES),
                   help="count parameters with this data set's number of classes for every net (default: each "
                        "net's own: 10 for CIFAR nets, 1000 for ImageNet nets)")
    p.add_argument("--source", type=_sources, default=DEFAULT_SOURCES, metavar="SOURCES",
                   help=f"which libraries to list, comma-separated: {', '.join(SOURCES)}, or all; timm adds "
                        f"~1,300 nets and takes minutes (default: {DEFAULT_SOURCES})")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    return p


if __name__ == "__main__":
    from train.engine.launch import exit_on_usage_error

    exit_on_usage_error(main)
