"""Differential privacy: events, accounting, and CSPRNG noise and sampling.

The noise and sampling names load :mod:`securefed.privacy.noise` (and with it
torch) on first use, so configuration, accounting and secure aggregation import
without torch.
"""

from typing import TYPE_CHECKING, Any

from securefed.privacy.accountant import (
    Budget,
    BudgetedAccountant,
    OwnerAccountant,
    calibrate_client_noise_multiplier,
    calibrate_noise_multiplier,
)
from securefed.privacy.accounting import (
    ONLINE_DEFAULT,
    Accountant,
    Backend,
    audit_tolerance,
    backend_error_bound,
    epsilon_for,
    independent_backend,
    new_accountant,
)
from securefed.privacy.events import (
    ClientGaussianEvent,
    ComposedEvent,
    DpSgdEvent,
    PrivacyEvent,
    PrivacyUnit,
    SelfComposedEvent,
    to_dp_accounting,
)

if TYPE_CHECKING:
    from securefed.privacy.noise import CsprngStream, SecureGaussianNoise, poisson_sample

_NOISE = frozenset({"CsprngStream", "SecureGaussianNoise", "poisson_sample"})


def __getattr__(name: str) -> Any:
    if name in _NOISE:
        from securefed.privacy import noise

        return getattr(noise, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ONLINE_DEFAULT",
    "Accountant",
    "Backend",
    "Budget",
    "BudgetedAccountant",
    "ClientGaussianEvent",
    "ComposedEvent",
    "CsprngStream",
    "DpSgdEvent",
    "OwnerAccountant",
    "PrivacyEvent",
    "PrivacyUnit",
    "SecureGaussianNoise",
    "SelfComposedEvent",
    "audit_tolerance",
    "backend_error_bound",
    "calibrate_client_noise_multiplier",
    "calibrate_noise_multiplier",
    "epsilon_for",
    "independent_backend",
    "new_accountant",
    "poisson_sample",
    "to_dp_accounting",
]
