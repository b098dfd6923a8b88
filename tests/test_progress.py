from __future__ import annotations

import io
import sys

import pytest

from bulkdm.progress import (
    SenderView,
    Snapshot,
    format_duration,
    format_rate,
    make_progress,
    plain_line,
    summary_text,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


SENDERS = (
    SenderView(account="alice", state="ready", sent=480, next_slot_in_s=0.0),
    SenderView(
        account="bob",
        state="resting",
        sent=500,
        next_slot_in_s=750.0,
        note="x_daily_limit until 14:02",
    ),
    SenderView(account="carol", state="out", sent=254, next_slot_in_s=None, note="reauth_required"),
)


def snap(**changes: object) -> Snapshot:
    values: dict[str, object] = {
        "campaign": "welcome",
        "counts": {"sent": 1234, "failed": 12, "skipped": 3, "pending": 3751},
        "total": 5000,
        "rate_per_s": 4.9,
        "eta_s": 750.0,
        "elapsed_s": 252.0,
        "senders": SENDERS,
    }
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.7, "0s"), (45.2, "45s"), (750.0, "12m30s"), (3600.0, "1h00m"),
     (7500.0, "2h05m"), (273600.0, "3d04h"), (-5.0, "0s"), (float("inf"), "--")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("per_s", "text"),
    [(4.94, "4.9/s"), (0.0, "0.0/s"), (15 / 900, "1.0/min"), (500 / 86400, "20.8/h")],
)
def test_format_rate(per_s: float, text: str) -> None:
    assert format_rate(per_s) == text


def test_plain_line_content() -> None:
    assert plain_line(snap()) == (
        "[welcome] 1234/5000 sent, 12 failed, 3 skipped, 3751 pending | 4.9/s | ETA 12m30s"
        " | senders: 1 ready, 1 resting, 1 out"
    )


def test_plain_line_without_eta_or_senders() -> None:
    line = plain_line(snap(eta_s=None, senders=(), counts={"sent": 0}, rate_per_s=0.0))
    assert line == "[welcome] 0/5000 sent | 0.0/s | ETA --"


def test_plain_line_says_when_the_next_slot_is_if_nobody_is_ready() -> None:
    resting = (
        SenderView(account="a", state="resting", sent=15, next_slot_in_s=130.0),
        SenderView(account="b", state="resting", sent=15, next_slot_in_s=65.0),
    )
    assert plain_line(snap(senders=resting)).endswith("| senders: 2 resting, next slot in 1m05s")


def test_plain_mode_throttles_to_the_interval() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = make_progress(stream, interval_s=10.0, clock=clock)
    progress.update(snap(counts={"sent": 1}))  # the first snapshot shows at once
    for step in range(1, 10):
        clock.now_s += 1.0
        progress.update(snap(counts={"sent": 1 + step}))
    clock.now_s += 1.0  # 10 s after the first line
    progress.update(snap(counts={"sent": 20}))
    clock.now_s += 0.5
    progress.update(snap(counts={"sent": 21}))
    progress.close(snap(counts={"sent": 22}))
    sent = [line.split()[1] for line in stream.getvalue().splitlines()]
    assert sent == ["1/5000", "20/5000", "22/5000"]


def test_plain_is_chosen_when_not_a_terminal_and_live_when_it_is() -> None:
    plain = io.StringIO()
    make_progress(plain, interval_s=1.0).update(snap())
    assert plain.getvalue().startswith("[welcome] ")
    tty = FakeTty()
    progress = make_progress(tty, interval_s=1.0)
    progress.update(snap())
    progress.close(snap())
    assert "\x1b[" in tty.getvalue()  # drawn with terminal control codes


def test_force_plain_on_a_terminal_and_none() -> None:
    tty = FakeTty()
    make_progress(tty, interval_s=1.0, force="plain").update(snap())
    assert tty.getvalue().startswith("[welcome] ")
    quiet = FakeTty()
    progress = make_progress(quiet, interval_s=0.0, force="none")
    progress.update(snap())
    progress.close(snap())
    assert quiet.getvalue() == ""


def test_bad_force_value() -> None:
    with pytest.raises(ValueError, match="force"):
        make_progress(io.StringIO(), interval_s=1.0, force="fancy")


def test_live_mode_renders_every_sender() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = make_progress(stream, interval_s=10.0, force="live", clock=clock)
    progress.update(snap())
    progress.close(snap(counts={"sent": 1300, "failed": 12, "pending": 3688}))
    out = stream.getvalue()
    for text in ("welcome", "alice", "bob", "carol", "resting", "x_daily_limit until 14:02",
                 "12m30s", "3751", "1300"):  # fmt: skip
        assert text in out


def test_live_mode_redraws_at_most_four_times_a_second() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = make_progress(stream, interval_s=10.0, force="live", clock=clock)
    for sent in range(100, 110):
        progress.update(snap(counts={"sent": sent}))
        clock.now_s += 0.1
    progress.close(snap(counts={"sent": 999}))
    out = stream.getvalue()
    # t = 0, 0.3 (first >= 0.25 after 0), 0.6, 0.9 -> sent 100, 103, 106, 109; then the final one
    assert [n for n in range(100, 110) if f"{n}/5000" in out] == [100, 103, 106, 109]
    assert "999/5000" in out


def test_live_mode_caps_the_sender_rows() -> None:
    stream = io.StringIO()
    many = tuple(
        SenderView(account=f"s{i:03d}", state="ready", sent=i, next_slot_in_s=0.0)
        for i in range(40)
    )
    progress = make_progress(stream, interval_s=1.0, force="live")
    progress.close(snap(senders=many))
    out = stream.getvalue()
    assert "s029" in out and "s030" not in out
    assert "10 more" in out


def test_summary_text() -> None:
    final = snap(
        counts={"sent": 4980, "failed": 12, "skipped": 5, "invalid": 3, "unknown": 2},
        eta_s=None,
        elapsed_s=3720.0,
    )
    text = summary_text(
        final,
        finish_reason="stopped by the user",
        failures_by_code={"user_not_found": 2, "x_dm_not_allowed": 10},
        resume_command="bulkdm run welcome.toml",
    )
    lines = text.splitlines()
    assert lines[0] == "Campaign 'welcome': stopped by the user after 1h02m"
    assert "  sent        4980 of 5000" in lines
    assert "  failed        12" in lines
    assert "  invalid        3" in lines
    assert "  pending" not in text  # zero rows: left out
    assert any("2 row(s) may have been delivered" in line for line in lines)
    codes = lines[lines.index("Failures by code:") + 1 :][:2]
    assert codes == ["  x_dm_not_allowed       10", "  user_not_found          2"]
    assert lines[1] == "Rows (whole campaign, earlier runs included):"
    assert "Senders (this run):" in lines
    assert "  bob: 500 sent this run, resting (x_daily_limit until 14:02)" in lines
    assert lines[-1] == "To resume: bulkdm run welcome.toml"
    assert text.endswith("\n")


def test_summary_text_of_a_clean_finish() -> None:
    text = summary_text(
        snap(counts={"sent": 10}, total=10, senders=()),
        finish_reason="finished",
        failures_by_code={},
        resume_command=None,
    )
    assert text == (
        "Campaign 'welcome': finished after 4m12s\n"
        "Rows (whole campaign, earlier runs included):\n"
        "  sent          10 of 10\n  failed         0\n"
    )


def test_done_senders_do_not_announce_a_next_slot() -> None:
    done = [SenderView(account="a", state="done", sent=3, next_slot_in_s=0.4),
            SenderView(account="b", state="done", sent=2, next_slot_in_s=30.0)]
    assert plain_line(snap(senders=done)).endswith("| senders: 2 done")
    waiting = [SenderView(account="a", state="waiting", sent=3, next_slot_in_s=49.0,
                          note="5/1m window full until 14:02:05 (49s)")]
    assert plain_line(snap(senders=waiting)).endswith(
        "| senders: 1 waiting, next slot in 49s (a: 5/1m window full until 14:02:05 (49s))")


def test_a_notice_on_the_same_terminal_is_printed_above_the_live_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen, stderr = FakeTty(), FakeTty()
    monkeypatch.setattr(sys, "stderr", stderr)
    progress = make_progress(screen, interval_s=1.0, force="live", clock=lambda: 0.0)
    progress.update(snap())
    sys.stderr.write("\nstopping: in-flight sends finish first\n")  # as cli prints the Ctrl-C notice
    progress.close(snap())
    out = screen.getvalue()
    # it went through the live display (which clears its frame, prints the line and draws the
    # frame again below it), not around it: a line written past the frame shifted it, and the
    # redraw left the old title and bar behind
    assert stderr.getvalue() == ""
    notice = out.index("stopping: in-flight sends finish first")
    assert out.rindex("\x1b[2K", 0, notice) > out.index("welcome")  # the frame was cleared
    assert out.index("welcome", notice) > notice  # and drawn again below the notice


def test_plain_line_shows_why_a_ready_sender_sends_nothing() -> None:
    failing = (SenderView(account="a", state="ready", sent=0, next_slot_in_s=0.0,
                          note="username lookup failed (connection_refused)"),)
    assert plain_line(snap(senders=failing)).endswith(
        "| senders: 1 ready; a: username lookup failed (connection_refused)")
