"""Jitter (human pacing) as pure functions of ``now``, the previous slot and an injected draw;
its settings, and what it does to the plan's estimate."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bulkdm.errors import ConfigError
from bulkdm.policies.jitter import Jitter, parse_jitter
from bulkdm.rates import Rate
from bulkdm.report import estimate_duration, send_time_s
from bulkdm.settings import load_settings

PACE = 60.0
NOW = 1_800_000_000.0


def _highest(low: float, high: float) -> float:
    return high


def _lowest(low: float, high: float) -> float:
    return low


def test_the_next_send_is_due_at_the_previous_slot_plus_the_pace_times_one_plus_u() -> None:
    jitter = Jitter(share=0.3)
    u = jitter.draw(_highest)
    assert u == pytest.approx(0.3)
    due = jitter.due_s(now_s=NOW, previous_s=NOW - 10, pace_s=PACE, u=u)
    assert due == pytest.approx(NOW - 10 + PACE * 1.3)
    assert jitter.due_s(now_s=NOW, previous_s=NOW - 10, pace_s=PACE, u=0.1) == \
        pytest.approx(NOW - 10 + PACE * 1.1)


def test_a_draw_below_zero_never_comes_before_the_limiter_allows() -> None:
    jitter = Jitter(share=0.3)
    u = jitter.draw(_lowest)
    assert u == pytest.approx(-0.3)
    # the limiter keeps its pace: the next slot is the previous one plus the pace
    allowed = NOW + PACE
    assert jitter.due_s(now_s=NOW, previous_s=NOW, pace_s=PACE, u=u, allowed_s=allowed) == allowed
    # a limiter that holds longer (a full window, a rest) holds the jittered send too
    later = NOW + 5 * PACE
    for u in (-0.3, 0.0, 0.3):
        assert jitter.due_s(now_s=NOW, previous_s=NOW, pace_s=PACE, u=u, allowed_s=later) == later


def test_a_due_time_is_never_before_now_and_a_first_send_is_not_held() -> None:
    jitter = Jitter(share=0.5)
    # the previous send is long past (a window opened, a rest ended): due now, not earlier
    assert jitter.due_s(now_s=NOW, previous_s=NOW - 3600, pace_s=PACE, u=0.5) == NOW
    assert jitter.due_s(now_s=NOW, previous_s=None, pace_s=PACE, u=0.5) == NOW


def test_draws_stay_within_the_share_whatever_the_draw_returns() -> None:
    jitter = Jitter(share=0.3)
    assert jitter.draw(lambda low, high: 5.0) == pytest.approx(0.3)
    assert jitter.draw(lambda low, high: -5.0) == pytest.approx(-0.3)
    rng = random.Random(7)
    draws = [jitter.draw(rng.uniform) for _ in range(2000)]
    assert min(draws) >= -0.3 and max(draws) <= 0.3
    # spread over the whole range, not bunched: each third of it gets about a third
    thirds = [sum(1 for u in draws if -0.3 + i * 0.2 <= u < -0.1 + i * 0.2) for i in range(3)]
    assert all(550 < t < 780 for t in thirds), thirds


def test_the_mean_gap_grows_by_a_quarter_of_the_share_where_the_pace_binds() -> None:
    jitter = Jitter(share=0.4)
    rng = random.Random(11)
    gaps = []
    previous = NOW
    for _ in range(20_000):
        allowed = previous + PACE  # the limiter's spacing
        due = jitter.due_s(now_s=previous, previous_s=previous, pace_s=PACE,
                           u=jitter.draw(rng.uniform), allowed_s=allowed)
        gaps.append(due - previous)
        previous = due
    assert min(gaps) >= PACE
    assert max(gaps) <= PACE * 1.4 + 1e-6
    assert sum(gaps) / len(gaps) == pytest.approx(PACE * jitter.mean_gap_factor, rel=0.01)
    assert jitter.mean_gap_factor == pytest.approx(1.1)


@pytest.mark.parametrize(("text", "share"), [("30%", 0.3), (" 5 % ", 0.05), ("0%", 0.0),
                                             ("100%", 1.0)])
def test_jitter_is_written_as_a_share(text: str, share: float) -> None:
    assert parse_jitter(text) == Jitter(share=share)


@pytest.mark.parametrize("text", ["30", "thirty%", "130%", "-5%"])
def test_bad_jitter_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="jitter"):
        parse_jitter(text)


def _settings(tmp_path: Path, campaign: str, alice: str = "", bob: str = "") -> Path:
    (tmp_path / "c.jsonl").write_text('{"recipient_id": "1", "text": "hi"}\n')
    (tmp_path / "c.toml").write_text(
        f'[campaign]\nname = "c"\n{campaign}\n'
        f'[[senders]]\naccount = "alice"\nrate = "15/15m"\n{alice}\n'
        f'[[senders]]\naccount = "bob"\nrate = "15/15m"\n{bob}\n')
    return tmp_path / "c.jsonl"


def test_jitter_is_set_for_the_campaign_and_per_sender(tmp_path: Path) -> None:
    settings = load_settings(_settings(tmp_path, 'jitter = "30%"', bob='jitter = "0%"'))
    assert settings.jitter_of("alice") == Jitter(share=0.3)
    assert settings.jitter_of("bob") is None  # its own 0 % turns the campaign's off
    settings = load_settings(_settings(tmp_path, "", alice='jitter = "20%"'))
    assert settings.jitter_of("alice") == Jitter(share=0.2)
    assert settings.jitter_of("bob") is None


def test_a_bad_jitter_setting_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jitter") as caught:
        load_settings(_settings(tmp_path, "", alice='jitter = "lots"'))
    assert caught.value.key == "senders[1].jitter"


def test_the_estimate_counts_the_longer_mean_gap(tmp_path: Path) -> None:
    rates = [Rate(count=15, period_s=900.0)]
    assert send_time_s(11, rates, 1.075) == pytest.approx(10 * 60 * 1.075)
    settings = load_settings(_settings(tmp_path, 'jitter = "30%"', bob='jitter = "0%"'))
    estimate = estimate_duration(settings, {"alice": 11, "bob": 11}, start_s=NOW)
    assert estimate.per_sender_s["alice"] == pytest.approx(10 * 60 * 1.075)
    assert estimate.per_sender_s["bob"] == pytest.approx(10 * 60)
    assert estimate.bound_by == "sender alice"
