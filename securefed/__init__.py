"""securefed: privacy-hardened federated learning.

Clients train with differential privacy, protect every update with secure
aggregation (or homomorphic encryption), and the server aggregates only
protected updates. See ``protocols/`` for the wire-level specifications.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# The library never configures logging; it only makes sure that an
# application without handlers does not get "no handler" warnings.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
