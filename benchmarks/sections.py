"""BENCHMARKS.md: each benchmark script owns one block between its own markers."""

from __future__ import annotations

from pathlib import Path

HEADER = "# securefed benchmarks\n\nNumbers from the scripts in `benchmarks/`.\n\n"


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Replace the text from ``begin`` to ``end`` in ``path`` with ``section``, or append it.

    ``section`` carries both markers; the other sections and notes are kept.
    """
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
