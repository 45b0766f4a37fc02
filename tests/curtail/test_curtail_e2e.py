"""The loop end to end: simulator, agent with control enabled, collector; each mode, restores, refusals,
a restart mid-curtailment and a schedule window, judged by the simulator's own truth."""

from __future__ import annotations

from tests.curtail.harness import AUTH, start_loop, stop_loop

CYCLES_TO_UNDER = 2  # the ideal is one: commands go out in the cycle that sees the site over


async def test_auto_brings_a_site_at_110_percent_under_within_two_cycles(tmp_path, make_sim_fleet):
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10)
    try:
        limit = loop.allocation_w * (1 - loop.margin)
        assert await loop.truth_w() > loop.allocation_w
        for cycle in range(1, CYCLES_TO_UNDER + 1):
            await loop.cycle()
            if await loop.truth_w() <= limit:
                break
        assert await loop.truth_w() <= limit, (cycle, await loop.truth_w(), limit)
        await loop.cycle()  # the next poll verifies what was sent
        audit = loop.audit()
        sent = [r for r in audit if r["event"] == "curtailed"]
        assert sent and all(r["who"] == "auto" and r["why"] and r["power_w"] > 0 for r in sent)
        assert {r["miner"] for r in audit if r["event"] == "verified"} == {r["miner"] for r in sent}
        assert audit[0]["event"] == "plan" and audit[0]["reasons"]
        # Every write the simulator saw came from an audited command (cgminer sends one per board).
        writes = await loop.writes()
        assert writes >= len(sent)
        state = await loop.curtailment()
        assert {c["miner"] for c in state["curtailed"]} == {r["miner"] for r in sent}
        assert all(c["verified"] for c in state["curtailed"])
        # Shed enough and not much more: at most one miner's worth above what was needed.
        over_w = audit[0]["figure_w"] - audit[0]["limit_w"]
        shed = sum(r["power_w"] for r in sent)
        assert over_w <= shed <= over_w + max(r["power_w"] for r in sent)
        # No stock Antminer (bmminer) is ever a candidate.
        bm = {f"{m.host}:{m.port}" for m in loop.sim.miners if m.dialect == "bmminer"}
        assert not bm & {r["miner"] for r in sent}
    finally:
        await stop_loop(loop)


async def test_plan_mode_sends_nothing_and_shows_the_plan(tmp_path, make_sim_fleet):
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10, mode="plan")
    try:
        for _ in range(3):
            await loop.cycle()
        assert await loop.writes() == 0
        state = await loop.curtailment()
        assert state["mode"] == "plan" and state["plan"]["actions"] and state["plan"]["need_w"] > 0
        assert state["curtailed"] == []
        assert await loop.truth_w() > loop.allocation_w
        metrics = await (await loop.collector.get("/metrics", headers=AUTH)).text()
        assert 'megawatch_site_curtailment_planned_watts{site="site-a"}' in metrics
    finally:
        await stop_loop(loop)
