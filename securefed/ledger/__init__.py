"""The audit ledger: append-only, signed, hash-chained evidence (protocols/ledger.md).

A separate record from logging: every privacy-relevant event (spends, mechanism
parameters, plans, dropouts, released-aggregate hashes, budget stops) is an
entry signed by the writer and linked to the previous entry's hash; owners
countersign their spends; :func:`verify_ledger` checks a ledger file
independently of the code that wrote it.
"""

from securefed.ledger.bodies import BudgetScope, Mechanism, ProtectionMode
from securefed.ledger.entry import Countersignature, Entry, EntryKind
from securefed.ledger.errors import LedgerSealedError, LedgerVerificationError
from securefed.ledger.store import Ledger
from securefed.ledger.verify import Failure, VerificationReport, verify_ledger

__all__ = [
    "BudgetScope",
    "Countersignature",
    "Entry",
    "EntryKind",
    "Failure",
    "Ledger",
    "LedgerSealedError",
    "LedgerVerificationError",
    "Mechanism",
    "ProtectionMode",
    "VerificationReport",
    "verify_ledger",
]
