"""The planner alone (pure): order, precision, limits, verification, restores, schedule lead; its config and the
audit log it is rebuilt from."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest

from megawatch.collector.audit import AuditLog
from megawatch.collector.config import ScheduleWindow, Site, load_collector_config
from megawatch.collector.curtail import Curtailed, MinerView, SiteState, allocation_ahead, plan_site
from megawatch.collector.curtailconfig import CurtailSettings, Priority
from megawatch.common.configfile import ConfigError

T0 = 1_800_000_000.0
TH = 1e12


def site(**settings) -> Site:
    cfg = CurtailSettings(**{"hold_s": 0, "min_off_s": 0, "max_step_ratio": 1.0, "hysteresis_ratio": 0.0,
                             "margin_ratio": 0.0, **settings})
    return Site("a", "A", 100_000.0, 1.0, 0.0, ("http://127.0.0.1:1",), curtailment=cfg)


def miner(i: int, watts: float, th: float, dialect: str = "bosminer", source: str = "firmware") -> MinerView:
    return MinerView(f"10.0.0.{i}:4028", "http://127.0.0.1:1", dialect, "up", th * TH, watts, T0 - 1, source)


FLEET = [miner(1, 3000, 100), miner(2, 3300, 100), miner(3, 1500, 100), miner(4, 3200, 100),
         miner(5, 3500, 100, dialect="bmminer"), miner(6, 3400, 100, dialect="btminer")]


def test_least_efficient_first_never_uncurtailable_and_not_much_more_than_needed():
    plan, _ = plan_site(site(), 104_000.0, FLEET, SiteState(), T0)
    assert [a.miner for a in plan.actions] == ["10.0.0.2:4028", "10.0.0.4:4028"]  # 33 then 32 J/TH
    shed = sum(a.power_w for a in plan.actions)
    assert 4000 <= shed < 4000 + 3200


def test_operator_priorities_and_never():
    s = site(priorities=(Priority("10.0.0.3:*", -1), Priority("10.0.0.2:*", never=True)))
    plan, _ = plan_site(s, 101_000.0, FLEET, SiteState(), T0)
    assert [a.miner for a in plan.actions] == ["10.0.0.3:4028"]


def test_measured_miners_before_estimated_ones():
    fleet = [miner(1, 3000, 100, dialect="cgminer", source="estimate"), miner(2, 2000, 100)]
    plan, _ = plan_site(site(), 101_000.0, fleet, SiteState(), T0)
    assert [a.miner for a in plan.actions] == ["10.0.0.2:4028"]


def test_rate_limit_per_step():
    plan, _ = plan_site(site(max_step_ratio=0.2), 120_000.0, FLEET, SiteState(), T0)
    assert len(plan.actions) == 1 and any("short" in r for r in plan.reasons)


def test_commanded_miners_are_not_shed_twice_then_verified_or_released():
    plan, state = plan_site(site(verify_s=30), 104_000.0, FLEET, SiteState(), T0)
    state = replace(state, curtailed={a.miner: Curtailed(a.miner, a.agent, T0, a.power_w, 100 * TH, 33.0)
                                      for a in plan.actions})
    # The agent has not polled since: the figure still holds their draw, nothing more is planned.
    again, state = plan_site(site(verify_s=30), 104_000.0, FLEET, state, T0 + 5)
    assert again.actions == () and again.pending_w >= 4000
    stopped = replace(FLEET[1], hashrate_hs=0.0, power_w=50.0, last_poll_s=T0 + 6)
    still = replace(FLEET[3], last_poll_s=T0 + 6)
    fleet = [FLEET[0], stopped, FLEET[2], still, *FLEET[4:]]
    checked, state = plan_site(site(verify_s=30), 100_800.0, fleet, state, T0 + 10)
    assert checked.verified == ("10.0.0.2:4028",) and checked.not_complied == ()
    late, state = plan_site(site(verify_s=30), 100_800.0, fleet, state, T0 + 40)
    assert [m for m, _ in late.not_complied] == ["10.0.0.4:4028"] and "10.0.0.4:4028" in state.refused
    assert "10.0.0.4:4028" not in state.curtailed
    assert [a.miner for a in late.actions] == ["10.0.0.1:4028"]  # the next candidate


def held(*watts: float, since: float = T0) -> SiteState:
    return SiteState(curtailed={f"10.0.0.{i}:4028": Curtailed(f"10.0.0.{i}:4028", "u", since, w, 100 * TH, w / 100,
                                                              verified=True) for i, w in enumerate(watts, 1)})


def test_restore_waits_for_the_hold_then_steps_most_efficient_first():
    s = site(hold_s=60, restore_per_step=2, hysteresis_ratio=0.05)
    plan, state = plan_site(s, 80_000.0, [], held(3000, 2000, 2500, 3300), T0 + 10)
    assert plan.actions == () and any("hold" in r for r in plan.reasons)
    plan, state = plan_site(s, 80_000.0, [], state, T0 + 80)
    assert [(a.kind, a.miner) for a in plan.actions] == [("restore", "10.0.0.2:4028"), ("restore", "10.0.0.3:4028")]
    plan, _ = plan_site(s, 80_000.0, [], state, T0 + 81)  # the hold starts again after a step
    assert plan.actions == ()


def test_restore_respects_hysteresis_min_off_and_an_unknown_figure():
    s = site(hysteresis_ratio=0.05, min_off_s=600)
    plan, _ = plan_site(s, 96_000.0, [], held(2000), T0 + 700)  # under 100 kW, not under 95 kW
    assert plan.actions == ()
    plan, _ = plan_site(s, 90_000.0, [], held(2000), T0 + 100)  # off only 100 s
    assert plan.actions == ()
    plan, _ = plan_site(s, 90_000.0, [], held(6000), T0 + 700)  # would not fit: 90 + 6 > 95
    assert plan.actions == ()
    plan, _ = plan_site(s, None, FLEET, held(2000), T0 + 700)
    assert plan.actions == () and any("unknown" in r for r in plan.reasons)
    plan, _ = plan_site(s, 90_000.0, [], held(2000), T0 + 700)
    assert [a.kind for a in plan.actions] == ["restore"]


def test_a_window_lowering_the_allocation_is_steered_to_within_the_lead():
    start = dt.datetime.fromtimestamp(T0 + 600, dt.UTC)
    window = ScheduleWindow(days=frozenset(range(7)), start=start.time().replace(second=0),
                            end=(start + dt.timedelta(hours=1)).time().replace(second=0), end_of_day=False,
                            timezone="UTC", allocation_w=90_000.0)
    s = replace(site(lead_s=900), schedule=(window,))
    assert allocation_ahead(s, T0, 900) == 90_000.0
    assert allocation_ahead(s, T0, 300) == 100_000.0
    plan, _ = plan_site(s, 95_000.0, FLEET, SiteState(), T0)
    assert plan.actions and any("schedule window" in r for r in plan.reasons)


SITES = """fleet: {name: f, allocation_mw: 1}
sites:
  - id: a
    allocation_mw: 1
    agents: [http://127.0.0.1:9100]
    curtailment: {mode: %s}
"""


def test_config_errors_name_file_line_and_key(tmp_path: Path):
    path = tmp_path / "sites.yaml"
    path.write_text(SITES % "later")
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    assert str(info.value) == (f"{path}:6: sites[0].curtailment.mode: expected one of off, plan, approve, auto, "
                               "got 'later'")
    path.write_text(SITES % "auto")
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    assert "curtailment_audit_file" in str(info.value) and "restart" in str(info.value)
    path.write_text(SITES % "auto" + "curtailment_audit_file: audit.jsonl\n")
    assert load_collector_config(path).curtailment_audit_file == tmp_path / "audit.jsonl"
    path.write_text(SITES % "plan")
    assert load_collector_config(path).sites[0].curtailment.mode == "plan"
    path.write_text(SITES % "auto" + "curtailment_audit_file: nowhere/audit.jsonl\n")
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    assert str(info.value) == (f"{path}:7: curtailment_audit_file: its directory "
                               f"{str(tmp_path / 'nowhere')!r} does not exist")


def test_the_audit_log_rebuilds_what_is_curtailed_and_survives_a_torn_line(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in (1, 2, 3):
        log.write(T0 + i, "a", "curtailed", "auto", miner=f"m{i}", agent="u", power_w=3000, hashrate_hs=1e14)
    log.write(T0 + 5, "a", "verified", "collector", miner="m1")
    log.write(T0 + 6, "a", "restored", "auto", miner="m2")
    log.write(T0 + 7, "a", "not_complied", "collector", miner="m3", why="still hashing")
    log.write(T0 + 8, "a", "curtailed", "operator", miner="m4", agent="u", power_w=2000, hashrate_hs=1e14)
    with open(tmp_path / "audit.jsonl", "a") as f:
        f.write('{"at": 1, "site": "a", "event": "restored", "mi')  # a crash mid-write
    held = AuditLog(tmp_path / "audit.jsonl").curtailed()["a"]
    assert sorted(held) == ["m1", "m4"] and held["m1"].verified and not held["m4"].verified


def test_verification_reads_the_agents_clock_not_ours():
    # The agent's clock is 100 s behind the collector's: its poll at T0 - 50 came after its command at T0 - 100.
    c = Curtailed("10.0.0.1:4028", "u", T0, 3000.0, 100 * TH, 30.0, agent_at=T0 - 100)
    polled = replace(FLEET[0], hashrate_hs=0.0, last_poll_s=T0 - 50)
    plan, state = plan_site(site(), 99_000.0, [polled, *FLEET[1:]], SiteState(curtailed={c.miner: c}), T0 + 5)
    assert plan.verified == (c.miner,) and state.curtailed[c.miner].verified


def test_a_stopped_miner_hashing_again_by_itself_is_released():
    c = Curtailed("10.0.0.1:4028", "u", T0, 3000.0, 100 * TH, 30.0, verified=True)
    rebooted = replace(FLEET[0], last_poll_s=T0 + 50)
    plan, state = plan_site(site(), 99_000.0, [rebooted, *FLEET[1:]], SiteState(curtailed={c.miner: c}), T0 + 60)
    assert plan.came_back == (c.miner,) and c.miner not in state.curtailed and c.miner not in state.refused
