"""infra.bootstrap.freeze_startup_heap: a server process's startup heap leaves the garbage collector's passes."""

from __future__ import annotations

import gc

from infra.bootstrap import freeze_startup_heap


def test_the_startup_heap_is_frozen_and_what_requests_allocate_is_still_collected():
    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # the modules imported so far, at least
        frozen = gc.get_freeze_count()
        Node()
        assert gc.collect() >= 1  # allocated after the freeze: collected as before
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()  # the rest of this test session collects as usual
