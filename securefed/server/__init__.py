"""The coordinator's side: aggregates protected updates only.

This package never imports ``securefed.client`` (an import-linter contract).
"""

from __future__ import annotations

from securefed.server.aggregation import SecureAggregate, aggregate_mean, require_protected

__all__ = ["SecureAggregate", "aggregate_mean", "require_protected"]
