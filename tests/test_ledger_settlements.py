"""How a settlement's sends and releases become rows: a row a grant, its sends a row a group."""

from __future__ import annotations

from bulkdm.ledger.base import (
    BATCH_IDS,
    SETTLE_SPREAD_S,
    Settlement,
    batch_of,
    settlements,
    unit_ids,
)


def test_a_grants_ids_are_its_own_and_lead_back_to_it() -> None:
    seven, eight = unit_ids(7, 3), unit_ids(8, BATCH_IDS)
    assert len(set(seven) | set(eight)) == 3 + BATCH_IDS  # no id of two grants
    assert {batch_of(i) for i in seven} == {7} and {batch_of(i) for i in eight} == {8}


def test_sends_are_grouped_by_grant_and_by_spread_and_releases_counted() -> None:
    a, b = unit_ids(1, 6), unit_ids(2, 2)
    half = SETTLE_SPREAD_S / 2
    sent = [(a[3], 10.0 + 4 * half), (a[0], 10.0), (a[1], 10.0 + half), (a[2], 10.0 + 3 * half),
            (b[0], 50.0)]
    assert settlements(sent, [a[4], a[5], b[1]]) == [
        # 10.0 and half a spread later together; the next is past the first's spread
        Settlement(batch=1, used=6, released=2, sends=((10.0 + half, 2), (10.0 + 4 * half, 2)),
                   first_s=10.0),
        Settlement(batch=2, used=2, released=1, sends=((50.0, 1),), first_s=50.0),
    ]


def test_a_settlement_of_releases_only_writes_no_send() -> None:
    assert settlements([], unit_ids(3, 2)) == [
        Settlement(batch=3, used=2, released=2, sends=(), first_s=None)]
    assert settlements([], []) == []
