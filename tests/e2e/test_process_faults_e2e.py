"""Process faults with real processes: agents and collectors die, Alertmanager goes away, configs change.

1. An agent killed (SIGKILL) and restarted: the collector marks its site stale meanwhile (power carried, not
   0) and recovers on its own.
2. The collector killed while an alert fires: the restarted collector keeps it firing from its state file
   (same start), and neither Alertmanager nor a webhook sees a "resolved" in between.
3. Alertmanager down for a while: what happens meanwhile (a new alert, a resolution) arrives when it is back.
4. SIGHUP on the collector with live data: a valid config takes effect without losing the readings or the
   firing alert; an invalid one is refused with its file:line and the old config keeps running.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.collector.fakes import (
    FakeAgent,
    FakeAlertmanager,
    fake_agent,
    fake_alertmanager,
)
from tests.e2e import processes
from tests.e2e.processes import (
    Proc,
    Procs,
    agent_yaml,
    alertmanager_alerts,
    free_port,
    get_json,
    listening_url,
    megawatch,
    require_binary,
    site_view,
    start_agent,
    start_collector,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

MW = 1e6
POLL_S = 0.5


def sites_yaml(path: Path, agents: dict[str, str], allocation_mw: dict[str, float], *, am_url: str | None = None,
               webhook: str | None = None, hold_s: float = 1.0, stale_s: float = 2.0, resend_s: float = 1.0,
               state_file: str | None = None) -> Path:
    lines = [f"fleet: {{name: faults, allocation_mw: {sum(allocation_mw.values()) + 1}}}", "sites:"]
    for site, url in agents.items():
        lines += [f"  - id: {site}", f"    allocation_mw: {allocation_mw[site]}", f"    agents: [{url}]"]
    lines += ["thresholds:", f"  hold_s: {hold_s}", f"  stale_after_s: {stale_s}", "alerting:",
              f"  resend_interval_s: {resend_s}", "  retry_base_s: 0.1", "  retry_max_s: 0.3", "  max_retries: 2"]
    if am_url:
        lines.append(f"  alertmanager_urls: [{am_url}]")
    if webhook:
        lines.append(f"  webhook_url: {webhook}")
    lines += ["listen: {address: 127.0.0.1, port: 0}", f"poll: {{interval_s: {POLL_S}, timeout_s: 0.4}}"]
    if state_file:
        lines.append(f"state_file: {state_file}")
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_am(procs: Procs, http: aiohttp.ClientSession, port: int, name: str) -> Proc:
    """A real Alertmanager on `port` with its own storage (a restarted one starts with no alerts)."""
    binary = require_binary("prometheus-alertmanager")
    storage = procs.tmp / name
    storage.mkdir()
    root = Path(__file__).resolve().parents[2]
    proc = procs.start(name, [
        binary, f"--config.file={root / 'configs' / 'prometheus' / 'alertmanager.yml'}", f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"])
    proc.url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.alive(), proc.output()
        async with http.get(proc.url + "/-/ready") as resp:
            return resp.status == 200

    await wait_until(ready, 15, f"{name} to be ready")
    return proc


async def over_in_am(http: aiohttp.ClientSession, am: Proc, site: str) -> list[dict[str, Any]] | None:
    found = [a for a in await alertmanager_alerts(http, am, "SiteOverAllocation") if a["labels"].get("site") == site]
    return found or None


async def test_agent_killed_and_restarted_site_goes_stale_then_recovers(
        procs: Procs, http: aiohttp.ClientSession, make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(sites=1)
    port = free_port()
    config = agent_yaml(procs.tmp / "site-a.yaml", "site-a", sim.miners)
    config.write_text(config.read_text().replace("port: 0}", f"port: {port}}}"))
    agent = await start_agent(procs, config, http)
    sites = sites_yaml(procs.tmp / "sites.yaml", {"site-a": agent.url}, {"site-a": 10})
    collector = await start_collector(procs, sites, http)

    async def status(wanted: str) -> dict[str, Any] | None:
        view = await site_view(http, collector, "site-a")
        return view if view["status"] == wanted else None

    fresh = await wait_until(lambda: status("ok"), 10, "site-a fresh")
    agent.popen.send_signal(signal.SIGKILL)
    agent.popen.wait(5)
    stale = await wait_until(lambda: status("stale"), 2.0 + 4 * POLL_S + 2, "site-a stale")
    # Carried, not 0: nothing of it is measured now, so all of it is allowance.
    # (The fresh upper bound: the estimated miners' draw carries the agent's margin as allowance.)
    assert fresh["miner_upper_bound_w"] > fresh["miner_power_w"]
    assert stale["miner_upper_bound_w"] == pytest.approx(fresh["miner_upper_bound_w"], rel=0.01)
    assert stale["miner_allowance_w"] == stale["miner_upper_bound_w"]
    assert stale["agents"][0]["up"] is False

    restarted = megawatch(procs, "agent-restarted", "agent", "--config", str(config))
    recovered = await wait_until(lambda: status("ok"), 20, "site-a fresh again after the agent restarts")
    assert recovered["miner_power_w"] == pytest.approx(fresh["miner_power_w"], rel=0.01)
    assert restarted.alive() and collector.alive()
    body = await get_json(http, collector.url + "/api/v1/alerts")
    assert not [a for a in body["active"] if a["alertname"] == "AgentDown"]


async def test_collector_restart_keeps_a_firing_alert_without_a_resolve(procs: Procs,
                                                                         http: aiohttp.ClientSession) -> None:
    # Hold (6 s) longer than Alertmanager keeps an alert without news (4 x resend = 4 s): a collector that
    # forgot its state would stay silent past endsAt and Alertmanager would resolve the alert by itself.
    hold_s, resend_s = 6.0, 1.0
    am = await start_am(procs, http, free_port(), "alertmanager")
    async with (fake_agent(FakeAgent("site-a", power_firmware_w=11 * MW)) as agent,
                fake_alertmanager(FakeAlertmanager()) as hook):
        sites = sites_yaml(procs.tmp / "sites.yaml", {"site-a": agent.url}, {"site-a": 10}, am_url=am.url,
                           webhook=hook.url + "/api/v2/alerts", hold_s=hold_s, resend_s=resend_s,
                           state_file="state/alerts.json")
        first = await start_collector(procs, sites, http)
        before = await wait_until(lambda: over_in_am(http, am, "site-a"), hold_s + 5, "the alert in Alertmanager")
        starts_at = before[0]["startsAt"]
        state = json.loads((procs.tmp / "state" / "alerts.json").read_text())
        saved = {a["name"]: a for a in state["alerts"]}
        assert saved["SiteOverAllocation"]["phase"] == "firing"

        first.popen.send_signal(signal.SIGKILL)  # no goodbye: only what is on disk survives
        first.popen.wait(5)
        killed = time.monotonic()
        second = megawatch(procs, "collector-2", "collector", "--config", str(sites), "--log-format", "json")
        second.url = await listening_url(second, "collector_started")

        async def firing_again() -> dict[str, Any] | None:
            body = await get_json(http, second.url + "/api/v1/alerts")
            return next((a for a in body["active"] if a["alertname"] == "SiteOverAllocation"
                         and a["state"] == "firing"), None) if body else None

        alert = await wait_until(firing_again, 5, "the restarted collector to report the alert firing")
        assert time.monotonic() - killed < hold_s, "fired again only after a new hold time: state was lost"
        assert "alert_state_restored" in second.output()
        # Watch Alertmanager past the point where a forgotten alert would have expired there.
        deadline = killed + hold_s + 2 * resend_s
        while time.monotonic() < deadline:
            now = await over_in_am(http, am, "site-a")
            assert now and now[0]["startsAt"] == starts_at, "the alert left Alertmanager or restarted"
            await wait_until(lambda: firing_again(), 1, "the collector to keep answering")
        assert alert["fired_at"] == pytest.approx(saved["SiteOverAllocation"]["fired_at"])
    statuses = [(a["labels"]["alertname"], a["status"]) for batch in hook.received for a in batch["alerts"]]
    assert ("SiteOverAllocation", "firing") in statuses
    assert ("SiteOverAllocation", "resolved") not in statuses, statuses


async def test_alertmanager_down_for_a_while_gets_what_happened_when_back(procs: Procs,
                                                                          http: aiohttp.ClientSession) -> None:
    port = free_port()
    am = await start_am(procs, http, port, "alertmanager")
    async with (fake_agent(FakeAgent("site-a", power_firmware_w=11 * MW)) as a,
                fake_agent(FakeAgent("site-b", power_firmware_w=5 * MW)) as b):
        sites = sites_yaml(procs.tmp / "sites.yaml", {"site-a": a.url, "site-b": b.url},
                           {"site-a": 10, "site-b": 10}, am_url=am.url, resend_s=30)
        collector = await start_collector(procs, sites, http)
        await wait_until(lambda: over_in_am(http, am, "site-a"), 6, "site-a's alert in Alertmanager")

        am.stop()
        b.power_firmware_w = 12 * MW  # a new alert and a resolution while Alertmanager is away
        a.power_firmware_w = 5 * MW

        async def changed_in_collector() -> bool:
            body = await get_json(http, collector.url + "/api/v1/alerts")
            over = {x["labels"]["site"] for x in body["active"]
                    if x["alertname"] == "SiteOverAllocation" and x["state"] == "firing"}
            return over == {"site-b"}

        await wait_until(changed_in_collector, 6, "the collector to fire site-b and resolve site-a")
        metrics = await (await http.get(collector.url + "/metrics")).text()
        assert f'megawatch_collector_notification_target_up{{target="http://127.0.0.1:{port}"}} 0.0' in metrics

        back = await start_am(procs, http, port, "alertmanager-back")
        # resend_interval is 30 s: only the retried backlog (or the resend on recovery) can bring it this fast.
        await wait_until(lambda: over_in_am(http, back, "site-b"), 5, "site-b's alert once Alertmanager is back")
        assert not await over_in_am(http, back, "site-a")

        def delivered_resolve() -> bool:
            return any('"SiteOverAllocation:site-a:resolved"' in line for line in collector.output().splitlines()
                       if '"alert_sent"' in line)

        async def resolve_logged() -> bool:
            return delivered_resolve()

        await wait_until(resolve_logged, 5, "site-a's resolve to be delivered")
        assert collector.alive()


async def test_collector_sighup_keeps_readings_and_alerts_and_refuses_a_bad_file(
        procs: Procs, http: aiohttp.ClientSession) -> None:
    async with fake_agent(FakeAgent("site-a", power_firmware_w=11 * MW)) as a:
        path = sites_yaml(procs.tmp / "sites.yaml", {"site-a": a.url}, {"site-a": 10}, hold_s=0.5)
        collector = await start_collector(procs, path, http)

        async def firing() -> bool:
            body = await get_json(http, collector.url + "/api/v1/alerts")
            return any(x["alertname"] == "SiteOverAllocation" and x["state"] == "firing" for x in body["active"])

        await wait_until(firing, 5, "the alert to fire")
        sites_yaml(path, {"site-a": a.url}, {"site-a": 10.5}, hold_s=0.5)  # still over: 11 > 10.5
        collector.popen.send_signal(signal.SIGHUP)

        async def reloaded() -> dict[str, Any] | None:
            view = await site_view(http, collector, "site-a")
            return view if view["allocation_w"] == 10.5 * MW else None

        view = await wait_until(reloaded, 5, "the new allocation")
        assert view["status"] == "ok" and view["miner_power_w"] == 11 * MW  # readings kept across the reload
        assert await firing()
        body = await get_json(http, collector.url + "/api/v1/alerts")
        assert not body["resolved"], "the reload resolved an alert whose condition never ended"

        path.write_text(path.read_text().replace("allocation_mw: 10.5", "allocation_mw: -3"))
        collector.popen.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            text = await (await http.get(collector.url + "/metrics")).text()
            return "megawatch_collector_config_last_reload_successful 0.0" in text

        await wait_until(refused, 5, "the bad reload to be refused")
        assert (await site_view(http, collector, "site-a"))["allocation_w"] == 10.5 * MW
        assert await firing() and collector.alive()
        failed = [json.loads(line) for line in collector.output().splitlines()
                  if '"config_reload_failed"' in line]
        assert failed and failed[0]["problems"] == [
            f"{path}:4: sites[0].allocation_mw: expected a number > 0, got -3"], failed


async def test_agent_sighup_applies_a_good_config_keeps_readings_and_refuses_a_bad_one(
        procs: Procs, http: aiohttp.ClientSession, make_sim_fleet: Any) -> None:
    from tests.chaos.harness import scrape, wait_for_cycle, write_agent_config
    from tests.chaos.harness import start_agent as start_chaos_agent

    sim = await make_sim_fleet(sites=1)  # 8 miners, one per dialect profile
    first, later = sim.miners[:6], sim.miners[6:]
    path = procs.tmp / "agent.yaml"
    write_agent_config(path, "site-a", [(m.host, m.port) for m in first], interval_s=2,
                       request_timeout_s=0.8, stale_grace_s=60)
    agent = await start_chaos_agent(procs, path, http)
    await wait_for_cycle(http, agent, 1, 10)
    gone = first[0]
    sim.set_fault([gone], "offline")  # turns stale, its last reading carried: the reload must keep that

    async def stale_row() -> dict[str, Any] | None:
        body = await get_json(http, agent.url + "/api/v1/miners?state=stale")
        return next((m for m in body["miners"] if m["miner"] == gone.address), None) if body else None

    before = await wait_until(stale_row, 10, "the offline miner to turn stale")
    polls_before = (await scrape(http, agent)).value("megawatch_agent_polls_total", outcome="ok") or 0

    # A good edit: one miner dropped, two added, a new interval. Applied at the next cycle, nothing lost.
    write_agent_config(path, "site-a", [(m.host, m.port) for m in [*first[:5], *later]], interval_s=1,
                       request_timeout_s=0.8, stale_grace_s=60)
    agent.popen.send_signal(signal.SIGHUP)

    async def configured(n: int) -> dict[str, Any] | None:
        body = await get_json(http, agent.url + "/api/v1/summary")
        return body if body and body["miners"]["configured"] == n and body["miners"]["up"] == n - 1 else None

    summary = await wait_until(lambda: configured(7), 10, "the reloaded miner list")
    after = await stale_row()
    assert after is not None and after["hashrate_hs"] == before["hashrate_hs"], (before, after)
    rows = {m["miner"] for m in (await get_json(http, agent.url + "/api/v1/miners"))["miners"]}
    assert first[5].address not in rows and {m.address for m in later} <= rows
    metrics = await scrape(http, agent)
    assert metrics.value("megawatch_agent_config_last_reload_successful") == 1
    assert (metrics.value("megawatch_agent_polls_total", outcome="ok") or 0) > polls_before  # not reset
    assert "config_reloaded" in agent.output()

    # A bad edit: refused with its file:line, the running config (7 miners) goes on polling.
    path.write_text(path.read_text().replace("interval_s: 1\n", "interval_s: fast\n"))
    agent.popen.send_signal(signal.SIGHUP)

    async def refused() -> bool:
        return (await scrape(http, agent)).value("megawatch_agent_config_last_reload_successful") == 0

    await wait_until(refused, 10, "the bad reload to be refused")
    cycle = summary["cycle"]["number"]
    await wait_for_cycle(http, agent, cycle + 2, 10)
    assert (await get_json(http, agent.url + "/api/v1/summary"))["miners"]["configured"] == 7
    failed = [json.loads(line) for line in agent.log.read_text().splitlines() if '"config_reload_failed"' in line]
    line = path.read_text().splitlines().index("  interval_s: fast") + 1
    assert failed and failed[0]["problems"] == [
        f"{path}:{line}: poll.interval_s: expected a number >= 1, got 'fast'"], failed
    assert agent.alive()
