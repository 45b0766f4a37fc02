"""The curtailment bench still runs end to end, and its small case meets the ideal."""

from __future__ import annotations

from bench.curtail import run, table


async def test_curtail_bench_small_measured_fleet_is_under_in_one_cycle() -> None:
    result = await run("measured", per_group=2, over=1.1, max_cycles=3, octet=179)
    assert result.cycles == 1 and result.after_ratio <= 0.97
    assert result.need_w <= result.planned_w <= result.need_w + result.largest_w
    assert "measured" in table([result])
