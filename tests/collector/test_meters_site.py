"""A site's figure: the meter when trusted, else the miners' figure with the declared non-miner load; the
reconciliation between them; the meter block of the sites file; and the whole path in one process (fake agent,
a real Modbus TCP meter on loopback, poll_once, /metrics and /api/v1/sites)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from megawatch.collector.aggregate import aggregate_fleet
from megawatch.collector.config import CollectorConfig, load_collector_config
from megawatch.collector.meterconfig import MeterConfig
from megawatch.collector.meters import MeterReading
from megawatch.collector.model import FleetTotals
from megawatch.collector.rules import RuleEngine
from megawatch.collector.service import CollectorService
from megawatch.collector.sitemeter import (
    FigureSource,
    MeterObservation,
    MeterResult,
    MeterState,
    apply_meters,
    figure_source,
    observe_meter,
    remember_unseen,
)
from megawatch.collector.web import make_app
from megawatch.common.configfile import ConfigError
from tests.collector.fakes import FakeAgent, fake_agent
from tests.collector.helpers import MW, make_config, make_site, make_summary, observed
from tests.collector.modbus_fake import fake_device, words

NOW = 1_800_000_000.0
METER = MeterConfig("127.0.0.1", stale_after_s=30.0, non_miner_load_w=0.5 * MW)


def metered_config(**thresholds: Any) -> CollectorConfig:
    site = replace(make_site("a", allocation_mw=10.0, pue=1.1, aux_mw=0.2), meter=METER)
    return make_config(site, make_site("b", allocation_mw=10.0, port=9200), **thresholds)


def fleet_with(cfg: CollectorConfig, meter: MeterObservation | None, miners_mw: float = 8.0) -> FleetTotals:
    obs = {url: observed(url, make_summary(power_w=miners_mw * MW / len(s.agents)), NOW)
           for s in cfg.sites for url in s.agents}
    return apply_meters(aggregate_fleet(cfg, obs, NOW), cfg, {"a": meter} if meter else {}, NOW)


def read(prev: MeterObservation | None, power_w: float | None, at: float, *, error: str | None = None,
         problems: tuple[str, ...] = ()) -> MeterObservation:
    reading = None if error else MeterReading(power_w, 1e9, problems)
    return observe_meter(prev, MeterResult(reading, error, 0.01), at, METER, 10 * MW)


MINERS_A = 8.0 * MW * 1.1 + 0.2 * MW  # miners x PUE + aux of site a
FIGURE_A = MINERS_A + 0.5 * MW  # ... + the declared non-miner load


def test_fresh_meter_is_the_figure_and_the_fleet_adds_it() -> None:
    cfg = metered_config()
    fleet = fleet_with(cfg, read(None, 9.9 * MW, NOW - 5))
    a = fleet.sites[0]
    assert a.meter is not None and a.meter.state is MeterState.OK and figure_source(a) is FigureSource.METER
    assert a.draw.facility_power_w == 9.9 * MW
    assert a.draw.utilisation_ratio == pytest.approx(0.99) and a.draw.headroom_w == pytest.approx(0.1 * MW)
    assert a.meter.miners_facility_power_w == pytest.approx(FIGURE_A)
    assert a.meter.reconciliation_w == pytest.approx(9.9 * MW - FIGURE_A)
    assert a.meter.reconciliation_ratio == pytest.approx((9.9 * MW - FIGURE_A) / FIGURE_A)
    b = fleet.sites[1]
    assert b.meter is None and figure_source(b) is FigureSource.MINERS
    assert fleet.draw.facility_power_w == pytest.approx(9.9 * MW + b.draw.facility_power_w)


def test_without_a_meter_reading_the_site_falls_back_to_miners_plus_declared_load() -> None:
    cfg = metered_config()
    for obs, state in ((None, MeterState.DOWN),
                       (read(read(None, 9e6, NOW - 10), None, NOW, error="timeout: no answer"), MeterState.DOWN),
                       (read(None, None, NOW, problems=("power_not_implemented",)), MeterState.REJECTED)):
        a = fleet_with(cfg, obs).sites[0]
        assert a.meter is not None and a.meter.state is state, state
        assert figure_source(a) is FigureSource.MINERS
        assert a.draw.facility_power_w == pytest.approx(FIGURE_A)
    # A meter whose last read failed still shows its last value, but reconciles nothing.
    a = fleet_with(cfg, read(read(None, 9e6, NOW - 10), None, NOW, error="timeout: no answer")).sites[0]
    assert a.meter is not None and a.meter.power_w == 9e6 and a.meter.reconciliation_w is None
    assert a.meter.error == "timeout: no answer"


def test_a_reading_that_stops_changing_goes_stale() -> None:
    cfg = metered_config()
    obs = read(None, 9.5e6, NOW - 40)
    obs = read(obs, 9.5e6, NOW - 20)  # the same value again: a gateway's cache, or a stuck register
    obs = read(obs, 9.5e6, NOW)
    a = fleet_with(cfg, obs).sites[0]
    assert a.meter is not None and a.meter.state is MeterState.STALE and a.meter.age_s == 40
    assert a.draw.facility_power_w == pytest.approx(FIGURE_A)
    obs = read(obs, 9.6e6, NOW)
    assert fleet_with(cfg, obs).sites[0].draw.facility_power_w == 9.6e6


def test_a_dark_site_is_judged_on_its_meter_not_on_its_allowance() -> None:
    cfg = metered_config()
    # Every miner of site a is hung: nothing measured, 8 MW allowed for (their last known draw).
    summary = make_summary(power_w=None, estimate_w=None, allowance_w=8.0 * MW, unknown=100)
    obs = {url: observed(url, summary, NOW) for s in cfg.sites for url in s.agents}
    plain = aggregate_fleet(cfg, obs, NOW)
    assert plain.sites[0].draw.facility_power_w == pytest.approx(MINERS_A)
    fleet = apply_meters(plain, cfg, {"a": read(None, 9.1 * MW, NOW)}, NOW)
    a = fleet.sites[0]
    assert a.meter is not None and a.meter.state is MeterState.OK, a.meter
    assert a.draw.facility_power_w == 9.1 * MW and a.draw.facility_allowance_w == 0.0
    assert a.status.value == "dark"  # the miners' own status still says they are out of sight


def test_a_steady_reading_with_a_moving_import_counter_stays_fresh() -> None:
    obs = observe_meter(None, MeterResult(MeterReading(9.5e6, 1.0e9), None, 0.0), NOW - 40, METER, 10 * MW)
    for at, wh in ((NOW - 20, 1.0e9 + 52_000), (NOW, 1.0e9 + 104_000)):
        obs = observe_meter(obs, MeterResult(MeterReading(9.5e6, wh), None, 0.0), at, METER, 10 * MW)
    a = fleet_with(metered_config(), obs).sites[0]
    assert a.meter is not None and a.meter.state is MeterState.OK and a.meter.age_s == 0


def test_load_only_the_meter_saw_is_carried_when_the_meter_is_lost() -> None:
    cfg = metered_config()
    obs = read(None, FIGURE_A + 1.2 * MW, NOW - 10)
    a = fleet_with(cfg, obs).sites[0]
    assert a.meter is not None and a.meter.reconciliation_w == pytest.approx(1.2 * MW)
    obs = remember_unseen(obs, a.meter)
    lost = read(obs, None, NOW, error="connect_failed: refused")
    a = fleet_with(cfg, lost).sites[0]
    assert a.meter is not None and a.meter.state is MeterState.DOWN and figure_source(a) is FigureSource.MINERS
    assert a.meter.unseen_w == pytest.approx(1.2 * MW)
    assert a.draw.facility_power_w == pytest.approx(FIGURE_A + 1.2 * MW)  # never below what the meter showed
    # Declared load is known (measured, like aux); what only the meter saw is an allowance now.
    assert a.draw.facility_measured_w == pytest.approx(FIGURE_A)
    assert a.draw.facility_allowance_w == pytest.approx(1.2 * MW)
    # Back, and the load gone: nothing is carried any more.
    back = read(lost, FIGURE_A * 0.99, NOW + 10)
    a = fleet_with(cfg, back).sites[0]
    assert remember_unseen(back, a.meter).unseen_w == 0.0  # type: ignore[arg-type]


@pytest.mark.parametrize(("power_w", "problem"), [
    (float("nan"), "power_not_a_number"),
    (-2 * MW, "power_negative"),
    (150 * MW, "power_above_plausible_maximum"),  # 10x the allocation: a scale or unit set wrong
    (8.5 * MW, "power_below_miners_measured"),  # under 9.5 MW measured by more than 5%
])
def test_implausible_meter_is_rejected_and_named(power_w: float, problem: str) -> None:
    a = fleet_with(metered_config(), read(None, power_w, NOW)).sites[0]
    assert a.meter is not None and a.meter.state is MeterState.REJECTED and problem in a.meter.problems
    assert a.draw.facility_power_w == pytest.approx(FIGURE_A)


def test_mismatch_alert_fires_past_the_ratio_and_allocation_is_judged_on_the_meter() -> None:
    cfg = metered_config(hold_s=0.0, meter_mismatch_ratio=0.05)
    engine = RuleEngine(cfg.thresholds)
    fleet = fleet_with(cfg, read(None, FIGURE_A * 1.03, NOW))
    assert not [a for a in engine.evaluate(fleet, NOW).active if a.name == "SiteMeterMismatch"]
    fleet = fleet_with(cfg, read(None, 10.5 * MW, NOW))  # +10.5%, and over the 10 MW allocation
    active = {a.name: a for a in engine.evaluate(fleet, NOW).active}
    assert set(active) >= {"SiteMeterMismatch", "SiteOverAllocation"}
    assert "Meter 10.50 MW (ok), miners' figure 9.50 MW" in active["SiteMeterMismatch"].description
    assert "+1.00 MW unaccounted for" in active["SiteMeterMismatch"].description
    assert active["SiteOverAllocation"].value == 10.5 * MW
    # The meter measures the whole site: nothing of the figure is allowance.
    assert "10.50 MW measured, 0.0 kW allowed for" in active["SiteOverAllocation"].summary
    assert "Judged on the site meter; the miners' figure is 9.50 MW." in active["SiteOverAllocation"].description
    # The meter drops out: the alert stays (the unseen 1.0 MW is carried) and says what it is judged on now.
    obs = remember_unseen(read(None, 10.5 * MW, NOW), fleet.sites[0].meter)  # type: ignore[arg-type]
    lost = read(obs, None, NOW + 1, error="timeout: no answer within 2 s")
    active = {a.name: a for a in engine.evaluate(fleet_with(cfg, lost), NOW + 1).active}
    assert active["SiteOverAllocation"].value == pytest.approx(10.5 * MW)
    assert ("The site meter is down (timeout: no answer within 2 s): judged on the miners' figure, plus 1.00 MW "
            "the meter last showed beyond it.") in active["SiteOverAllocation"].description


# ---- the sites file -----------------------------------------------------------------------------------

SITES = """\
fleet: {name: f, allocation_mw: 20}
sites:
  - id: a
    allocation_mw: 10
    agents: [http://127.0.0.1:9100]
    meter:
%s
poll: {interval_s: 5}
"""


def load(tmp_path: Path, meter: str) -> CollectorConfig:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES % "\n".join("      " + line for line in meter.strip().splitlines()))
    return load_collector_config(path)


def test_meter_block_loads_into_watts(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
host: 127.0.0.1
map: generic
non_miner_load_mw: 0.25
registers:
  power: {table: input, address: 100, type: int32, word_order: little, scale: 0.1, unit: kW}
  energy_import: {address: 200, type: uint32, unit: kWh, scale_factor_address: 202}
""")
    meter = cfg.sites[0].meter
    assert meter is not None and meter.port == 502 and meter.unit_id == 1 and meter.non_miner_load_w == 250_000
    assert meter.power is not None and (meter.power.function, meter.power.factor) == (4, 100.0)
    assert meter.energy_import is not None and meter.energy_import.span == (200, 3)


@pytest.mark.parametrize(("meter", "line", "message"), [
    ("host: 127.0.0.1\nmap: modbus", 6, "sites[0].meter.map: expected one of sunspec, sdm630, pm5100, generic"),
    ("host: 127.0.0.1\nmap: sdm630\nregisters: {power: {address: 0, unit: W}}", 6,
     "sites[0].meter.registers: only map: generic takes registers"),
    ("host: 127.0.0.1\nmap: generic", 6, "sites[0].meter.map: map: generic needs registers"),
    ("host: 127.0.0.1\nmap: generic\nregisters: {power: {address: 0, type: int24, unit: W}}", 6,
     "sites[0].meter.registers.power.type: expected one of int16"),
    ("host: 127.0.0.1\nmap: sunspec\ntimeout_s: 9", 6,
     "sites[0].meter.timeout_s: expected a number <= poll.interval_s (5), got 9"),
    ("host: 127.0.0.1\nmap: sunspec\nunit: 3", 6, "sites[0].meter.unit: unknown key (did you mean 'unit_id'?)"),
    ("map: sunspec", 6, "sites[0].meter.host: required key is missing"),
])
def test_bad_meter_block_is_one_line_naming_file_line_and_key(tmp_path: Path, meter: str, line: int,
                                                               message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, meter)
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{tmp_path / 'sites.yaml'}:") and message in p for p in problems), problems
    assert all(p.count("\n") == 0 for p in problems)


# ---- one process: agent + meter -> poll_once -> /metrics and /api/v1/sites ------------------------------

def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_service_reads_the_meter_with_the_agents_and_shows_both() -> None:
    async with (fake_agent(FakeAgent("a", power_firmware_w=8 * MW)) as agent, fake_device() as dev,
                aiohttp.ClientSession() as session):
        meter = MeterConfig("127.0.0.1", dev.port, map="sdm630", timeout_s=1.0, non_miner_load_w=0.5 * MW)
        site = replace(make_site("a", allocation_mw=10.0), agents=(agent.url,), meter=meter)
        cfg = replace(make_config(site), poll_interval_s=5, poll_timeout_s=1)
        clock = [NOW]
        service = CollectorService(cfg, session, "http://x/api/v1/alerts", clock=lambda: clock[0])
        async with TestClient(TestServer(make_app(service))) as client:
            await service.poll_once()  # nothing at the meter's registers yet: an exception reply
            body = await (await client.get("/api/v1/sites")).json()
            view = body["sites"][0]
            assert view["figure_source"] == "miners" and view["meter"]["state"] == "down"
            assert view["meter"]["error"].startswith("device_error:")
            assert view["facility_power_w"] == 8.5 * MW
            dev.put(4, 52, [*words(9.1e6, "float32"), *[0] * 18, *words(5e6, "float32")])
            clock[0] += 5
            await service.poll_once()
            view = (await (await client.get("/api/v1/sites")).json())["sites"][0]
            assert view["figure_source"] == "meter" and view["meter"]["state"] == "ok"
            assert view["facility_power_w"] == pytest.approx(9.1e6)
            assert view["meter"]["reconciliation_w"] == pytest.approx(0.6e6)
            got = samples(await (await client.get("/metrics")).text())
        service.meters.close()
    site_a = (("site", "a"),)
    assert got[("megawatch_site_meter_power_watts", site_a)] == pytest.approx(9.1e6)
    assert got[("megawatch_site_meter_up", site_a)] == 1.0
    assert got[("megawatch_site_meter_trusted", site_a)] == 1.0
    assert got[("megawatch_site_meter_age_seconds", site_a)] == 0.0
    assert got[("megawatch_site_reconciliation_watts", site_a)] == pytest.approx(0.6e6)
    assert got[("megawatch_site_meter_imported_energy_joules_total", site_a)] == pytest.approx(5e9 * 3600)
    assert got[("megawatch_site_facility_power_watts", site_a)] == pytest.approx(9.1e6)
    assert got[("megawatch_site_meter_state", (("site", "a"), ("state", "ok")))] == 1.0
    assert got[("megawatch_collector_meter_reads_total", (("outcome", "device_error"), ("site", "a")))] == 1.0
    assert got[("megawatch_collector_meter_reads_total", (("outcome", "ok"), ("site", "a")))] == 1.0
    assert 0 < got[("megawatch_collector_meter_read_duration_seconds", site_a)] < 1.0


async def test_reload_keeps_an_unchanged_meter_and_starts_a_changed_one_afresh() -> None:
    async with aiohttp.ClientSession() as session:
        site = replace(make_site("a"), meter=MeterConfig("127.0.0.1", 1502))
        cfg = make_config(site)
        service = CollectorService(cfg, session, "http://x/api/v1/alerts")
        service.meter_obs["a"] = read(None, 9e6, NOW)
        client = service.meters.clients["a"]
        service.apply_config(replace(cfg, thresholds=replace(cfg.thresholds, hold_s=5.0)))
        assert service.meters.clients["a"] is client and "a" in service.meter_obs
        # Another meter (or the same one remapped): its readings are not the old one's.
        service.apply_config(replace(cfg, sites=(replace(site, meter=MeterConfig("127.0.0.1", 1503)),)))
        assert service.meters.clients["a"] is not client and "a" not in service.meter_obs
        service.apply_config(replace(cfg, sites=(replace(site, meter=None),)))
        assert not service.meters.clients and not service.meter_obs


def test_the_meter_is_reconciled_with_the_miners_at_face_value_not_with_their_estimate_margin() -> None:
    # Every miner read, 0.8 MW of the agents' margin on their estimates in the allowance: judged, not drawn.
    cfg = metered_config()
    margin = 0.8 * MW
    obs = {url: observed(url, replace(make_summary(power_w=8.0 * MW / len(s.agents)), power_allowance_w=margin,
                                      allowance_margin_w=margin), NOW)
           for s in cfg.sites for url in s.agents}
    plain = aggregate_fleet(cfg, obs, NOW)
    a = plain.sites[0]
    assert a.draw.facility_power_w == pytest.approx(MINERS_A + margin * 1.1) and a.status.value == "ok"
    fleet = apply_meters(plain, cfg, {"a": read(None, FIGURE_A, NOW - 5)}, NOW)
    meter = fleet.sites[0].meter
    assert meter is not None and meter.miners_facility_power_w == pytest.approx(FIGURE_A)
    assert meter.reconciliation_ratio == pytest.approx(0.0, abs=1e-9)  # a healthy site: no mismatch
    # 1 MW the miners do not see is carried as such when the meter drops out; the margin is judged on top, as
    # before the meter had its say: the estimates' error is not known without it.
    seen = read(None, FIGURE_A + 1.0 * MW, NOW - 5)
    carried = remember_unseen(seen, apply_meters(plain, cfg, {"a": seen}, NOW).sites[0].meter)  # type: ignore[arg-type]
    assert carried.unseen_w == pytest.approx(1.0 * MW)
    lost = apply_meters(plain, cfg, {"a": replace(carried, answered=False, up=False)}, NOW).sites[0]
    assert lost.draw.facility_power_w == pytest.approx(FIGURE_A + 1.0 * MW + margin * 1.1)
