"""Errors of the ledger package (both derive from securefed's one hierarchy)."""

from __future__ import annotations

from securefed.errors import ProtocolError, SecurefedError

__all__ = ["LedgerSealedError", "LedgerVerificationError"]


class LedgerSealedError(ProtocolError):
    """The ledger is sealed (protocols/ledger.md §5.10): nothing may be appended to it."""


class LedgerVerificationError(SecurefedError):
    """A ledger failed verification; the message names the first bad entry and why.

    Unlike :class:`securefed.errors.IntegrityError` this message is specific on
    purpose: an auditor checking a stored file holds no secret, so there is no
    oracle to protect, and naming the first bad entry is the whole point.
    """

    def __init__(self, first_bad: int | None, reason: str) -> None:
        where = "ledger" if first_bad is None else f"entry {first_bad}"
        super().__init__(f"{where}: {reason}")
        self.first_bad = first_bad
        self.reason = reason
