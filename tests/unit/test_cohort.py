"""Share coordinates: the full graph's per-holder shortcut agrees with x(owner, holder)."""

from __future__ import annotations

import pytest

from securefed.secagg.cohort import ShareCoordinates


def test_full_graph_coordinates_are_the_same_for_every_owner():
    ids = [3, 8, 11, 20, 41]
    neighbours = {i: tuple(j for j in ids if j != i) for i in ids}
    xs = ShareCoordinates(neighbours, full=True)
    for holder in ids:
        fixed = xs.same_for_every_owner(holder)
        assert fixed == 1 + ids.index(holder)
        assert all(xs.x(owner, holder) == fixed for owner in ids)
    with pytest.raises(ValueError, match="not one of"):
        xs.same_for_every_owner(4)


def test_sparse_coordinates_depend_on_the_owner():
    neighbours = {1: (2, 5), 2: (1, 3), 3: (2, 5), 5: (1, 3)}
    xs = ShareCoordinates(neighbours)
    assert xs.same_for_every_owner(3) is None
    assert (xs.x(2, 3), xs.x(5, 3)) == (3, 2)  # 3 is the last of {1, 2, 3}, the middle of {1, 3, 5}
