"""Differential privacy: events, accounting, and CSPRNG noise and sampling."""

from securefed.privacy.accountant import Budget, OwnerAccountant, calibrate_noise_multiplier
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.privacy.noise import CsprngStream, SecureGaussianNoise, poisson_sample

__all__ = [
    "Budget",
    "CsprngStream",
    "DpSgdEvent",
    "OwnerAccountant",
    "PrivacyUnit",
    "SecureGaussianNoise",
    "calibrate_noise_multiplier",
    "poisson_sample",
]
