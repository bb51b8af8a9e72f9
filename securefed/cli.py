"""The ``securefed`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from securefed import __version__

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``securefed`` command."""
    parser = argparse.ArgumentParser(prog="securefed", description=__doc__)
    parser.add_argument("--version", action="version", version=f"securefed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the secure-aggregation demo (20 clients, 3 dropouts)")
    demo.add_argument("--clients", type=int, default=20)
    demo.add_argument("--length", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from securefed.demo import run_demo

        if args.clients < 16 or args.length < 10:
            parser.error("the demo needs at least 16 clients and 10 parameters")
        return 0 if run_demo(clients=args.clients, length=args.length) else 1
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":
    sys.exit(main())
