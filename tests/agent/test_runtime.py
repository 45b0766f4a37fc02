from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from megawatch.agent import runtime


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_collects_less_often_and_leaves_start_up_objects_alone() -> None:
    runtime.tune_gc()
    young, middle, old = gc.get_threshold()
    assert young >= 10_000  # not CPython's 700: a young collection per few polls cost ~13% of the CPU
    assert (middle, old) == runtime.GC_THRESHOLDS[1:]
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restore_gc")
def test_cycles_are_still_collected_after_tuning() -> None:
    runtime.tune_gc()

    class Node:
        pass

    collected_before = sum(s["collected"] for s in gc.get_stats())
    for _ in range(runtime.GC_THRESHOLDS[0] * 2):  # bounded: two young thresholds' worth of cyclic garbage
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
    assert sum(s["collected"] for s in gc.get_stats()) > collected_before
