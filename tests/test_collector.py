from __future__ import annotations

import gc

from bulkdm.collector import SEND_THRESHOLDS, tuned_collector


def test_the_collector_is_tuned_while_sending_and_restored_after() -> None:
    before = gc.get_threshold()
    with tuned_collector():
        assert gc.get_threshold() == SEND_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what existed is out of the collector's walks
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_runs_in_one_process_nest_and_the_last_to_leave_restores() -> None:
    before = gc.get_threshold()
    with tuned_collector():
        with tuned_collector():
            pass
        assert gc.get_threshold() == SEND_THRESHOLDS  # the outer run still sends
    assert gc.get_threshold() == before
