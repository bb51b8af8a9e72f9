"""Layout of a verified cohort: graph parameters, neighbourhoods, share coordinates.

Client and server compute it the same way from the same signed cohort
(protocols/secagg.md §5.2), so neither can be told a different graph.
"""

from __future__ import annotations

from collections.abc import Mapping

from securefed.secagg import derive
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import GraphParameters, choose_parameters, neighbourhoods
from securefed.secagg.messages import AdvertiseKeys

__all__ = ["cohort_layout"]


def cohort_layout(
    ads: Mapping[int, AdvertiseKeys], context: RoundContext
) -> tuple[GraphParameters, dict[int, tuple[int, ...]], dict[int, int]]:
    """Graph parameters, neighbourhoods and x-coordinates of a verified cohort."""
    ids = sorted(ads)
    p = context.params
    params = choose_parameters(len(ids), p.threat, kind=p.graph, full_up_to=p.full_graph_up_to)
    seed = derive.graph_seed(context.digest(), ((i, ads[i].signature) for i in ids))
    return params, neighbourhoods(ids, params, seed), {u: k + 1 for k, u in enumerate(ids)}
