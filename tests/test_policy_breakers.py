"""The breakers as pure functions of recent outcomes."""

from __future__ import annotations

from bulkdm.policies.breakers import RefusalBreaker, SameErrorBreaker


def test_the_refusal_breaker_trips_above_its_share_of_the_sample() -> None:
    breaker = RefusalBreaker(sample=20, threshold=0.3)
    assert not breaker.trips([True] * 6)  # 6 of 20 is 30 %: not above
    assert breaker.trips([True] * 7)  # a run of refusals trips it within the sample
    mixed = [True, True, False] * 10  # two thirds refused, spread out
    assert breaker.trips(mixed) and not breaker.trips([True, False, False, False] * 10)
    assert breaker.why([True] * 7) == "refusal breaker: 7 of its last 7 sends refused (over 30% of 20)"


def test_only_the_last_sample_counts() -> None:
    breaker = RefusalBreaker(sample=10, threshold=0.3)
    assert not breaker.trips([True] * 4 + [False] * 10)


def test_the_same_error_breaker_needs_most_of_a_full_sample() -> None:
    breaker = SameErrorBreaker(sample=10, share=0.8)
    assert breaker.trips(["bad_template"] * 9) is None  # not yet a sample
    assert breaker.trips(["bad_template"] * 8 + [None, "http_503"]) == "bad_template"
    assert breaker.trips(["bad_template"] * 7 + [None] * 3) is None
    assert breaker.trips(["a", "b"] * 5) is None
    assert SameErrorBreaker(sample=0).trips(["a"] * 50) is None  # 0 turns it off


def test_reads_refused_longer_than_the_limit_are_an_outage() -> None:
    breaker = SameErrorBreaker(sample=10, max_read_throttle_s=600.0)
    assert not breaker.throttled_too_long(1000.0, 1600.0)  # exactly the limit: not yet
    assert breaker.throttled_too_long(1000.0, 1600.5)
    assert not SameErrorBreaker(sample=0).throttled_too_long(0.0, 1e9)  # 0 turns it off
