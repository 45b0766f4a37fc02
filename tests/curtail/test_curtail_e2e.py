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
        for cycle in range(1, CYCLES_TO_UNDER + 1):  # noqa: B007 (named in the failure message)
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
        # Every write the simulator saw is in the audit log (cgminer's take one per board).
        assert await loop.writes() == loop.audited_writes() >= len(sent)
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


async def curtail_once(loop) -> set[str]:
    await loop.cycle()
    await loop.cycle()
    return {c["miner"] for c in (await loop.curtailment())["curtailed"]}


async def stopped(loop) -> set[str]:
    return {r["address"] for r in loop.sim.fleet.miner_rows() if r["stopped"]}


async def test_approve_sends_only_after_an_authenticated_approval(tmp_path, make_sim_fleet):
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10, mode="approve")
    try:
        await loop.cycle()
        await loop.cycle()
        state = await loop.curtailment()
        plan_id = state["awaiting_approval"]["plan"]
        assert state["awaiting_approval"]["actions"] and await loop.writes() == 0
        url = "/api/v1/curtailment/site-a/approve"
        assert (await loop.collector.post(url, json={"plan": plan_id})).status == 401
        assert (await loop.collector.post(url, json={"plan": plan_id + 1}, headers=AUTH)).status == 409
        assert await loop.writes() == 0
        resp = await loop.collector.post(url, json={"plan": plan_id}, headers=AUTH)
        assert resp.status == 200 and all(r["ok"] for r in (await resp.json())["results"])
        assert await loop.writes() == loop.audited_writes() > 0
        assert await loop.truth_w() <= loop.allocation_w * (1 - loop.margin)
        events = [(r["event"], r["who"]) for r in loop.audit()]
        assert ("approve", "operator") in events and ("curtailed", "operator") in events
    finally:
        await stop_loop(loop)


async def test_load_falls_and_miners_are_restored_in_steps(tmp_path, make_sim_fleet):
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.25, restore_per_step=2)
    try:
        curtailed = await curtail_once(loop)
        assert len(curtailed) > 2 and await stopped(loop) == curtailed
        loop.sim.fleet.set_load("site-a", 0.5)
        counts = []
        for _ in range(8):
            await loop.cycle()
            counts.append(len(await stopped(loop)))
            if counts[-1] == 0:
                break
        assert counts[-1] == 0, counts
        steps = [a - b for a, b in zip([len(curtailed), *counts], counts, strict=False)]
        assert max(steps) <= 2, counts  # staggered: at most restore_per_step per cycle
        assert {r["miner"] for r in loop.audit() if r["event"] == "restored"} == curtailed
        assert await loop.writes() == loop.audited_writes()
    finally:
        await stop_loop(loop)


async def test_a_collector_restart_mid_curtailment_still_restores(tmp_path, make_sim_fleet):
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10)
    try:
        curtailed = await curtail_once(loop)
        assert curtailed
        await loop.restart_collector()
        assert {c["miner"] for c in (await loop.curtailment())["curtailed"]} == curtailed
        loop.sim.fleet.set_load("site-a", 0.5)
        for _ in range(6):
            await loop.cycle()
        assert await stopped(loop) == set()
        assert await loop.writes() == loop.audited_writes()  # the restarts came from the new process, audited
    finally:
        await stop_loop(loop)


async def test_a_miner_refusing_is_skipped_for_the_next_candidate(tmp_path, make_sim_fleet):
    # No API write access on the miners: cgminer refuses (Code 45); the others have no such check.
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10, allow_control=False)
    try:
        cg = [f"{m.host}:{m.port}" for m in loop.sim.miners if m.dialect == "cgminer"]
        entries = ", ".join(f"{{match: '{name}', priority: -1}}" for name in cg)
        loop.rewrite(mode="auto", margin_ratio=0.03, hold_s=0, min_off_s=0, max_step_ratio=0.5,
                     priorities=f"[{entries}]")
        await loop.restart_collector()
        for _ in range(3):
            await loop.cycle()
        assert await loop.truth_w() <= loop.allocation_w * (1 - loop.margin)
        assert await loop.writes() == loop.audited_writes()  # refused ones too: the simulator counts them
        failed = {r["miner"] for r in loop.audit() if r["event"] == "failed"}
        assert failed and failed <= set(cg)
        refused = {r["miner"] for r in (await loop.curtailment())["refused"]}
        assert failed == refused and not (await stopped(loop)) & set(cg)
    finally:
        await stop_loop(loop)


async def test_a_schedule_window_is_met_before_it_begins(tmp_path, make_sim_fleet):
    import datetime as dt
    loop = await start_loop(tmp_path, make_sim_fleet, over=0.95, lead_s=900)
    try:
        assert await loop.truth_w() < loop.allocation_w  # under the base allocation now
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).replace(second=0, microsecond=0)
        end = start + dt.timedelta(hours=1)
        lowered = loop.allocation_w * 0.95 / 1.10  # the truth will be 110 % of it
        window = (f"    schedule:\n      - {{days: [mon, tue, wed, thu, fri, sat, sun], from: '{start:%H:%M}', "
                  f"to: '{end:%H:%M}', allocation_mw: {lowered / 1e6!r}}}\n")
        loop.rewrite(mode="auto", margin_ratio=0.03, hold_s=0, min_off_s=0, max_step_ratio=0.5, lead_s=900,
                     schedule=window)
        await loop.restart_collector()
        for _ in range(2):
            await loop.cycle()
        assert await loop.truth_w() <= lowered * (1 - loop.margin)
        assert any("schedule window" in why for r in loop.audit() if r["event"] == "plan" for why in r["reasons"])
    finally:
        await stop_loop(loop)


async def test_a_miner_that_keeps_hashing_is_released_and_the_next_one_taken(tmp_path, make_sim_fleet):
    import time

    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10, verify_s=1)
    try:
        await loop.cycle()  # commands sent
        first = {r["miner"] for r in loop.audit() if r["event"] == "curtailed"}
        # One of them comes straight back (as after a reboot: the stop flag is in memory): it did not comply.
        liar = sorted(first)[0]
        miner = next(m for m in loop.sim.fleet.miners if m.identity.address == liar)
        miner.control.disabled.clear()
        loop.sim.fleet.control_changed(miner)
        deadline = time.monotonic() + 10
        while not any(r["event"] == "not_complied" for r in loop.audit()):
            assert time.monotonic() < deadline, loop.audit()
            await loop.cycle()
        state = await loop.curtailment()
        assert liar in {r["miner"] for r in state["refused"]} and liar not in {c["miner"] for c in state["curtailed"]}
        await loop.cycle()  # the next candidate is taken for the liar's share
        assert {r["miner"] for r in loop.audit() if r["event"] == "curtailed"} - first
        assert await loop.truth_w() <= loop.allocation_w * (1 - loop.margin)
    finally:
        await stop_loop(loop)


async def test_nothing_is_sent_while_the_audit_log_cannot_be_written(tmp_path, make_sim_fleet):
    loop = await start_loop(tmp_path, make_sim_fleet, over=1.10)
    try:
        audit = loop.service.curtailer.audit
        good = audit.path
        (tmp_path / "not-a-dir").write_text("")
        audit.path = tmp_path / "not-a-dir" / "audit.jsonl"  # every write fails (ENOTDIR)
        for _ in range(2):
            await loop.cycle()
        assert await loop.writes() == 0 and not audit.healthy
        assert (await loop.curtailment())["plan"]["actions"]  # planned, held
        audit.path = good
        await loop.cycle()
        assert await loop.writes() == loop.audited_writes() > 0
    finally:
        await stop_loop(loop)
