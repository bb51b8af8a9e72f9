"""The README's example and the transcript audit run and say what they claim."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "secure_aggregation.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "survivors (1, 2, 3, 4, 5, 6, 8, 9, 10)" in out
    error = float(out.rsplit("max error", 1)[1])
    assert error < 2.0 / (2**16 - 1)  # within one quantisation step (clip 1, 16 bits)


def test_transcript_audit_passes(tmp_path):
    # False-alarm rate: 18 clients x (chi-square at alpha 1e-6 + a 5-sigma
    # correlation bound, about 6e-7) is below 3e-5 per run.
    spec = importlib.util.spec_from_file_location("audit", ROOT / "audits" / "secagg_transcript.py")
    assert spec is not None
    assert spec.loader is not None
    audit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(audit)
    evidence = audit.main(tmp_path, clients=18, length=4000)
    assert evidence["exact_sum"] is True
    assert evidence["all_uniform"] is True
    assert evidence["all_uncorrelated"] is True
    assert (tmp_path / "secagg_transcript.md").read_text().startswith("# Secure-aggregation")
