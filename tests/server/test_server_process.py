"""The standalone server's process settings (server/uvloop/server.py)."""

from __future__ import annotations

import gc

from tidings.server.uvloop.server import GC_THRESHOLDS, tune_collector


def test_a_serving_process_freezes_start_up_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what start-up built (this test's modules too)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert gc.get_threshold() == before
