"""Layout of a verified cohort: graph parameters, neighbourhoods, share coordinates.

Client and server compute it the same way from the same signed cohort
(protocols/secagg.md §5.2), so neither can be told a different graph.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from securefed.secagg import derive
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import GraphKind, GraphParameters, choose_parameters, neighbourhoods
from securefed.secagg.messages import AdvertiseKeys

__all__ = ["ShareCoordinates", "cohort_layout"]


class ShareCoordinates:
    """Shamir x-coordinates: holder ``h`` of owner ``o``'s secrets sits at ``x(o, h)``.

    ``x(o, h)`` is ``h``'s 1-based position among ``o``'s holders (``o`` and its
    neighbours) sorted by client id (protocols/secagg.md §3.5). With the full
    graph that is ``h``'s position in the cohort; with the sparse graph every
    owner's holders use ``1..k+1``, so the server interpolates most secrets on
    the same points and reuses one set of Lagrange coefficients.
    """

    __slots__ = ("_cohort", "_neighbours")

    def __init__(
        self,
        neighbours: Mapping[int, tuple[int, ...]],
        *,
        full: bool = False,
        owners: Iterable[int] | None = None,
    ) -> None:
        # Full graph: every owner's holders are the whole cohort, so keep only the
        # sorted cohort (O(n) instead of O(n^2)). Otherwise keep the owners asked for.
        self._cohort: tuple[int, ...] | None = tuple(sorted(neighbours)) if full else None
        keep = neighbours if owners is None else {o: neighbours[o] for o in owners}
        self._neighbours: Mapping[int, tuple[int, ...]] = {} if full else dict(keep)

    def same_for_every_owner(self, holder: int) -> int | None:
        """``holder``'s coordinate if every owner gives it the same one, else ``None``.

        That is the full graph, where it is ``holder``'s position in the cohort.

        Raises:
            ValueError: ``holder`` is not in the full graph's cohort.
        """
        if self._cohort is None:
            return None
        position = bisect.bisect_left(self._cohort, holder)
        if position == len(self._cohort) or self._cohort[position] != holder:
            raise ValueError("not one of the cohort's share holders")
        return 1 + position

    def x(self, owner: int, holder: int) -> int:
        """The coordinate of ``holder``'s share of ``owner``'s secrets."""
        fixed = self.same_for_every_owner(holder)
        if fixed is not None:
            return fixed
        others = self._neighbours[owner]  # sorted, owner excluded
        position = bisect.bisect_left(others, holder)
        if holder != owner and (position == len(others) or others[position] != holder):
            raise ValueError("not one of the owner's share holders")
        return 1 + position + (1 if owner < holder else 0)


def cohort_layout(
    ads: Mapping[int, AdvertiseKeys], context: RoundContext
) -> tuple[GraphParameters, dict[int, tuple[int, ...]], ShareCoordinates]:
    """Graph parameters, neighbourhoods and share coordinates of a verified cohort."""
    ids = sorted(ads)
    p = context.params
    params = choose_parameters(len(ids), p.threat, kind=p.graph, full_up_to=p.full_graph_up_to)
    seed = derive.graph_seed(context.digest(), ((i, ads[i].signature) for i in ids))
    graph = neighbourhoods(ids, params, seed)
    return params, graph, ShareCoordinates(graph, full=params.kind is GraphKind.FULL)
