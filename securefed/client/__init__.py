"""The data owner's side: the plaintext update lives here and nowhere else."""

from __future__ import annotations

from securefed.client.update import PlaintextUpdate, quantize_update

__all__ = ["PlaintextUpdate", "quantize_update"]
