"""One exception hierarchy for securefed.

Caller misuse raises :class:`ValueError` / :class:`TypeError` (or
:class:`ConfigError`, which is also a ``ValueError``). Failures of data and of
protocol peers subclass :class:`SecurefedError`.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "DataError",
    "InsufficientSharesError",
    "IntegrityError",
    "PolicyViolation",
    "PrivacyBudgetExceeded",
    "ProtocolError",
    "SecurefedError",
    "UnprotectedUpdateError",
]


class SecurefedError(Exception):
    """Base class of every error securefed raises on purpose."""


class ProtocolError(SecurefedError):
    """A peer or the caller broke the protocol (wrong stage, malformed message, replay).

    The session that raised it is unchanged; a message that caused it was not applied.
    """


class InsufficientSharesError(ProtocolError):
    """Too few participants or shares survive: the round aborts and reveals nothing."""


class IntegrityError(SecurefedError):
    """An authenticity or integrity check failed (tag, share, signature, commitment, hash).

    Deliberately opaque: the message never says which check failed or why, so
    that it cannot serve as an oracle.
    """

    def __init__(self, message: str = "integrity check failed") -> None:
        super().__init__(message)


class UnprotectedUpdateError(SecurefedError, TypeError):
    """Something other than a protected (masked or encrypted) update reached the server."""


class PrivacyBudgetExceeded(SecurefedError):
    """The requested work would spend more privacy than a budget allows."""


class PolicyViolation(SecurefedError):
    """A round plan asks more of a data owner than its signed local policy allows."""


class ConfigError(SecurefedError, ValueError):
    """A configuration value is invalid, inconsistent or unsafe."""


class DataError(SecurefedError):
    """Input data is malformed (wrong shape, non-finite values, bad file contents)."""


class BackendUnavailable(SecurefedError, ImportError):
    """An optional backend is not installed; the message names the extra to install."""

    def __init__(self, backend: str, extra: str) -> None:
        super().__init__(
            f"{backend} is not installed; install it with: pip install 'securefed[{extra}]'"
        )
        self.backend = backend
        self.extra = extra
