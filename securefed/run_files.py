"""The files ``securefed simulate`` writes in its output directory (one place for the names)."""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "LEDGER_EXPORT_FILE",
    "LEDGER_FILE",
    "LEDGER_KEY_FILE",
    "METRICS_FILE",
    "OWNER_KEYS_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
]

METRICS_FILE = "metrics.jsonl"
"""One JSON object per round (``securefed.federation.RoundMetrics``)."""
CONFIG_FILE = "config.toml"
"""The resolved configuration (every default explicit)."""
SUMMARY_FILE = "summary.json"
"""Final test metrics, noise multiplier, planned epsilon, why the run stopped."""
LEDGER_FILE = "ledger.db"
"""The signed, hash-chained ledger (protocols/ledger.md §4.1)."""
LEDGER_KEY_FILE = "ledger.pub"
"""The ledger writer's initial public key, hex (what an auditor pins)."""
LEDGER_EXPORT_FILE = "ledger.jsonl"
"""The sealed ledger as JSON Lines (protocols/ledger.md §4.2), for auditors without SQLite."""
OWNER_KEYS_FILE = "owner_keys.json"
"""The owners' public identity keys (the roster's), pinned by an audit of countersignatures."""
CHECKPOINT_FILE = "checkpoint.pt"
"""A resumable run's state after its last release (simulation only)."""
REPORT_FILE = "report.html"
"""The self-contained HTML privacy report."""
