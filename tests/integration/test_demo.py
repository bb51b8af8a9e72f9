"""The demo and the CLI entry point run a real round end to end."""

from __future__ import annotations

import io

from rich.console import Console

from securefed.cli import main
from securefed.demo import run_demo


def test_run_demo_is_exact():
    out = io.StringIO()
    assert run_demo(clients=16, length=200, console=Console(file=out, width=120)) is True
    text = out.getvalue()
    assert "unmasked sum == survivors' exact quantised sum" in text
    assert "14 of 16" in text  # 3 dropouts; client 15 drops after masking, so counts


def test_cli_demo_returns_zero(capsys):
    assert main(["demo", "--clients", "16", "--length", "100"]) == 0
    assert "secure aggregation demo" in capsys.readouterr().out
