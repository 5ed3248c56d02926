"""The layout of the studies' ``--help``: descriptions written for people, shown at the terminal's width.

A command's description is plain text: prose paragraphs; blocks whose lines are indented (example commands, a
file format), which must keep their lines; and lists of ``  term  what it is``. argparse either refills
everything (mangling the blocks) or nothing (RawDescriptionHelpFormatter: prose as wide as the source, too wide
for an 80-column terminal); ``LaidOutHelp`` refills the prose, and each list entry under its own text.
"""
from __future__ import annotations

import argparse
import re
import textwrap

LIST_ENTRY = re.compile(r"( +\S+ {2,})(\S.*)")  # "  term  what it is": two spaces or more after the term


class LaidOutHelp(argparse.RawDescriptionHelpFormatter):
    """Prose refilled to the terminal's width, list entries wrapped under their text, other indented lines kept;
    never a line broken at a hyphen (suite-logs/, --nproc_per_node)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r"\n[ \t]*\n", textwrap.dedent(text).strip())
        return "\n\n".join(textwrap.indent(_laid_out(p, width - len(indent)), indent) for p in paragraphs)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return _wrap(" ".join(text.split()), width)


def _laid_out(paragraph: str, width: int) -> str:
    lines = paragraph.splitlines()
    if not any(line[:1].isspace() for line in lines):
        return "\n".join(_wrap(" ".join(paragraph.split()), width))
    heading = [] if lines[0][:1].isspace() else lines[:1]  # "tasks:" above a list or block
    entries = [LIST_ENTRY.fullmatch(line) for line in lines[len(heading):]]
    if not all(entries):
        return paragraph
    return "\n".join(heading + [line for e in entries for line in _wrap(e[2], width, e[1], " " * len(e[1]))])


def _wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False,
                         break_long_words=False)
