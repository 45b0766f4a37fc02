"""Collector config (configs/sites.yaml): the fleet, its sites, their allocations, thresholds, alerting.

Every MW figure is converted to W here, once; the rest of the collector works in watts and seconds.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from megawatch.collector.catalogue import ALERTS, COLLECTOR_ALERT_NAMES
from megawatch.collector.curtailconfig import CurtailSettings, load_curtailment
from megawatch.collector.meterconfig import MeterConfig, check_meter_timeouts, load_meter
from megawatch.collector.production import Production, load_production
from megawatch.common import yamlfile
from megawatch.common.configfile import ConfigError, Section
from megawatch.common.logs import load_log_settings
from megawatch.common.redact import public_url as public_url  # the collector's modules import it from here
from megawatch.common.webconfig import WebConfig, load_web_config
from megawatch.common.yamlfile import YamlFileError, file_problem

MW = 1e6  # W per MW
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
ALERT_NAMES = COLLECTOR_ALERT_NAMES  # the alerts the collector itself raises (collector/catalogue.py)
_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MIN_POLL_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """An allocation that applies on `days` from `start` to `end` local time (end <= start crosses midnight)."""

    days: frozenset[int]  # datetime.weekday() of the day the window starts
    start: time
    end: time  # time(0, 0) with end_of_day=True means 24:00
    end_of_day: bool
    timezone: str
    allocation_w: float

    def applies(self, at_s: float) -> bool:
        """Whether the window is in force at the POSIX time `at_s`."""
        local = datetime.fromtimestamp(at_s, ZoneInfo(self.timezone))
        now = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.end_of_day:
            return day in self.days and now >= self.start
        if self.start < self.end:
            return day in self.days and self.start <= now < self.end
        # Crosses midnight: the evening part belongs to today, the morning part to yesterday's window.
        return (day in self.days and now >= self.start) or ((day - 1) % 7 in self.days and now < self.end)


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    allocation_w: float
    pue: float  # facility draw = miner draw x pue + aux_w
    aux_w: float
    agents: tuple[str, ...]  # base URLs of the agent shards polling this site; their totals add up
    schedule: tuple[ScheduleWindow, ...] = ()
    meter: MeterConfig | None = None  # the site's feeder meter, read over Modbus TCP
    unknown_agent_allowance_w: float | None = None  # miner draw counted for an agent never heard from
    curtailment: CurtailSettings = field(default_factory=CurtailSettings)  # docs/curtailment.md

    def allocation_at(self, at_s: float) -> float:
        """The allocation in force at `at_s`: the strictest window that applies, else the base allocation."""
        applying = [w.allocation_w for w in self.schedule if w.applies(at_s)]
        return min(applying) if applying else self.allocation_w

    def facility_power_w(self, miner_power_w: float) -> float:
        return miner_power_w * self.pue + self.aux_w

    def unknown_agent_w(self, at_s: float) -> float:
        """Miner draw counted for one agent that never answered: the configured figure, else the agent's share
        of the allocation in force net of aux (a site nobody has heard from is taken to draw its allocation)."""
        if self.unknown_agent_allowance_w is not None:
            return self.unknown_agent_allowance_w
        allocation = self.allocation_at(at_s)
        net = allocation - self.aux_w if allocation > self.aux_w else allocation
        return net / self.pue / len(self.agents)


@dataclass(frozen=True, slots=True)
class Thresholds:
    near_ratio: float = 0.95
    # An alert clears only once its value is below line x (1 - hysteresis_ratio): no flapping on the line.
    hysteresis_ratio: float = 0.02
    hold_s: float = 60.0
    hold_overrides_s: tuple[tuple[str, float], ...] = ()
    stale_after_s: float = 60.0
    miners_down_ratio: float = 0.2
    meter_mismatch_ratio: float = 0.05  # SiteMeterMismatch: |meter - miners' figure| / miners' figure above this
    unknown_share_ratio: float = 0.1  # SiteUnknownShareHigh: allowance / upper bound above this

    def hold_for(self, alertname: str) -> float:
        return dict(self.hold_overrides_s).get(alertname, self.hold_s)


@dataclass(frozen=True, slots=True)
class Alerting:
    # URLs may carry credentials (user:password@, ?token=): kept out of repr; logs use public_url().
    alertmanager_urls: tuple[str, ...] = field(default=(), repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    resend_interval_s: float = 60.0
    timeout_s: float = 5.0
    max_retries: int = 5
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    queue_limit: int = 10_000
    # On SIGTERM, how long the last delivery attempt may take: an Alertmanager that is down must not hold up
    # a stop (systemd's TimeoutStopSec, then SIGKILL, would lose the state file write-out as well).
    shutdown_timeout_s: float = 3.0
    external_url: str | None = None  # where operators reach this collector; used in generatorURL


@dataclass(frozen=True, slots=True)
class AgentClient:
    """How the collector reaches agents served over TLS and/or basic auth (their --web.config.file)."""

    ca_file: Path | None = None  # CA bundle that signed the agents' certificates (default: the system's)
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # read from password_file, never in the config


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    path: str
    fleet_name: str
    fleet_allocation_w: float
    allow_oversubscription: bool
    sites: tuple[Site, ...]
    thresholds: Thresholds
    alerting: Alerting
    listen_address: str = "127.0.0.1"
    listen_port: int = 9300
    poll_interval_s: float = 15.0
    poll_timeout_s: float = 5.0
    web: WebConfig | None = None  # TLS and basic auth for the HTTP endpoints (web_config_file)
    agent_client: AgentClient = AgentClient()
    state_file: Path | None = None  # alert state kept across restarts (none: alerts start afresh)
    curtailment_audit_file: Path | None = None  # every plan, approval, command and outcome, JSON lines
    log_format: str = "auto"  # auto: console on a terminal, JSON lines otherwise
    log_level: str = "info"
    production: Production | None = None  # difficulty and fee level for expected BTC (collector/production.py)

    def site(self, site_id: str) -> Site | None:
        return next((s for s in self.sites if s.id == site_id), None)


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_zone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _clock(item: Section, name: str) -> time | None:
    value = item.string(name, expected="a time 'HH:MM' (00:00 to 24:00)",
                        check=lambda v: bool(_HHMM.match(v)) and (v[:2] != "24" or v == "24:00"))
    if value is None:
        return None
    hours, minutes = int(value[:2]), int(value[3:])
    return time(0, 0) if hours == 24 else time(hours, minutes)


def _load_window(item: Section, site_zone: str) -> ScheduleWindow | None:
    days_raw = item.strings("days", DAYS)
    days = frozenset(DAYS.index(d.lower()) for d in days_raw if d.lower() in DAYS)
    if len(days) != len({d.lower() for d in days_raw}) or not days_raw:
        item.error("days", f"expected a list of days from {', '.join(DAYS)}, got {list(days_raw)!r}")
    start = _clock(item, "from")
    end = _clock(item, "to")
    zone = item.string("timezone", site_zone, check=_is_zone, expected="an IANA time zone such as 'Europe/Oslo'")
    allocation_mw = item.number("allocation_mw", exclusive_minimum=0)
    end_of_day = item.data.get("to") == "24:00"
    if start is not None and end is not None and start == end and not end_of_day:
        item.error("to", "window is empty: 'to' equals 'from' (use 00:00 to 24:00 for a whole day)")
    item.done()
    if start is None or end is None or allocation_mw is None or zone is None:
        return None
    return ScheduleWindow(days=days, start=start, end=end, end_of_day=end_of_day, timezone=zone,
                          allocation_w=allocation_mw * MW)


def _load_site(item: Section) -> Site | None:
    site_id = item.string("id", check=lambda v: bool(_SITE_ID.match(v)),
                          expected="a site id of lowercase letters, digits, '-' or '_' (at most 63)")
    name = item.string("name", site_id)
    allocation_mw = item.number("allocation_mw", exclusive_minimum=0)
    pue = item.number("pue", 1.0, minimum=1.0, maximum=3.0)
    aux_mw = item.number("aux_mw", 0.0, minimum=0.0)
    unknown_agent_mw = item.number("unknown_agent_allowance_mw", None, exclusive_minimum=0)
    agents = item.strings("agents")
    for url in agents or ():
        if not _is_url(url):
            item.error("agents", f"expected http(s) URLs such as 'http://127.0.0.1:9100', got {url!r}")
    if agents is not None and len(set(agents)) != len(agents):
        item.error("agents", "the same agent URL is listed twice; its totals would be counted twice")
    zone = item.string("timezone", "UTC", check=_is_zone, expected="an IANA time zone such as 'Europe/Oslo'")
    windows = tuple(w for w in (_load_window(s, zone or "UTC") for s in item.sections("schedule")) if w)
    meter = load_meter(item.section("meter")) if item.has("meter") else None
    curtailment = load_curtailment(item.section("curtailment"))
    item.done()
    if site_id is None or allocation_mw is None or not agents:
        if agents == ():
            item.error("agents", "expected at least one agent URL")
        return None
    return Site(id=site_id, name=name or site_id, allocation_w=allocation_mw * MW, pue=pue, aux_w=aux_mw * MW,
                agents=tuple(u.rstrip("/") for u in agents), schedule=windows, meter=meter,
                unknown_agent_allowance_w=unknown_agent_mw * MW if unknown_agent_mw is not None else None,
                curtailment=curtailment)


def _load_thresholds(sec: Section) -> Thresholds:
    d = Thresholds()
    near = sec.number("near_ratio", d.near_ratio, exclusive_minimum=0, maximum=1)
    hysteresis = sec.number("hysteresis_ratio", d.hysteresis_ratio, minimum=0, maximum=0.5)
    hold = sec.number("hold_s", d.hold_s, minimum=0)
    overrides: list[tuple[str, float]] = []
    per_alert = sec.section("hold_overrides_s")
    for name in list(per_alert.data):
        if name not in ALERTS:  # Prometheus-only alerts too: `megawatch rules` takes their hold from here
            per_alert.error(str(name), f"unknown alert; known: {', '.join(ALERTS)}")
            per_alert.raw(str(name))
            continue
        value = per_alert.number(name, minimum=0)
        if value is not None:
            overrides.append((name, value))
    stale = sec.number("stale_after_s", d.stale_after_s, exclusive_minimum=0)
    down = sec.number("miners_down_ratio", d.miners_down_ratio, exclusive_minimum=0, maximum=1)
    mismatch = sec.number("meter_mismatch_ratio", d.meter_mismatch_ratio, exclusive_minimum=0, maximum=1)
    unknown = sec.number("unknown_share_ratio", d.unknown_share_ratio, exclusive_minimum=0, maximum=1)
    sec.done()
    if near is not None and hysteresis is not None and near * (1 - hysteresis) <= 0:
        sec.error("hysteresis_ratio", "leaves no room below near_ratio")
    return Thresholds(near_ratio=near, hysteresis_ratio=hysteresis, hold_s=hold,
                      hold_overrides_s=tuple(overrides), stale_after_s=stale, miners_down_ratio=down,
                      meter_mismatch_ratio=mismatch,
                      unknown_share_ratio=unknown)


def _load_alerting(sec: Section) -> Alerting:
    d = Alerting()
    url_expected = "an http(s) URL such as 'http://127.0.0.1:9093'"
    urls = sec.strings("alertmanager_urls", ())
    for url in urls:
        if not _is_url(url):
            sec.error("alertmanager_urls", f"expected a list of http(s) URLs, got {url!r}")
    webhook = sec.string("webhook_url", None, check=_is_url, expected=url_expected)
    resend = sec.number("resend_interval_s", d.resend_interval_s, exclusive_minimum=0)
    timeout = sec.number("timeout_s", d.timeout_s, exclusive_minimum=0)
    retries = sec.integer("max_retries", d.max_retries, minimum=0, maximum=100)
    base = sec.number("retry_base_s", d.retry_base_s, exclusive_minimum=0)
    cap = sec.number("retry_max_s", d.retry_max_s, exclusive_minimum=0)
    limit = sec.integer("queue_limit", d.queue_limit, minimum=1)
    shutdown = sec.number("shutdown_timeout_s", d.shutdown_timeout_s, exclusive_minimum=0)
    external = sec.string("external_url", None, check=_is_url, expected=url_expected)
    sec.done()
    if base is not None and cap is not None and cap < base:
        sec.error("retry_max_s", f"expected a number >= retry_base_s ({base:g}), got {cap:g}")
    return Alerting(alertmanager_urls=tuple(u.rstrip("/") for u in urls), webhook_url=webhook,
                    resend_interval_s=resend, timeout_s=timeout, max_retries=retries, retry_base_s=base,
                    retry_max_s=cap, queue_limit=limit, shutdown_timeout_s=shutdown,
                    external_url=external)


def load_collector_config(path: str | Path) -> CollectorConfig:
    """Load and validate a sites file; raises ConfigError with one line per problem."""
    top = Section.of_file(path, "collector config")
    fleet = top.section("fleet", required=True)
    fleet_name, fleet_mw, oversubscribe = None, None, False
    if top.has("fleet"):  # a missing section is one problem, not one per key inside it
        fleet_name = fleet.string("name")
        fleet_mw = fleet.number("allocation_mw", exclusive_minimum=0)
        oversubscribe = fleet.boolean("allow_oversubscription", False)
        fleet.done()

    sites: list[Site] = []
    seen: dict[str, int] = {}
    agent_owner: dict[str, str] = {}
    site_items = list(top.sections("sites", required=True))
    if top.has("sites") and not site_items and isinstance(top.data.get("sites"), list):
        top.error("sites", "expected at least one site")
    for i, item in enumerate(site_items):
        site = _load_site(item)
        if site is None:
            continue
        if site.id in seen:
            item.error("id", f"duplicate site id {site.id!r} (also sites[{seen[site.id]}])")
            continue
        seen[site.id] = i
        for url in site.agents:
            if url in agent_owner:
                item.error("agents", f"{url!r} is already an agent of site {agent_owner[url]!r}")
            agent_owner[url] = site.id
        sites.append(site)

    thresholds = _load_thresholds(top.section("thresholds"))
    alerting = _load_alerting(top.section("alerting"))
    listen = top.section("listen")
    address = listen.string("address", "127.0.0.1", check=is_host,
                            expected="an IP address or a host name such as 'localhost'")
    port = listen.integer("port", 9300, minimum=0, maximum=65535)
    listen.done()
    log_format, log_level = load_log_settings(top.section("log"))
    poll = top.section("poll")
    # Each cycle fetches every agent and logs: below this a typo (0.001) becomes a flood of both.
    interval = poll.number("interval_s", 15.0, minimum=MIN_POLL_INTERVAL_S)
    timeout = poll.number("timeout_s", 5.0, exclusive_minimum=0)
    poll.done()
    check_meter_timeouts(top, interval)
    here = Path(path).parent  # relative file names are read from beside the config, wherever we start
    web_file = top.string("web_config_file", None)
    state_file = top.string("state_file", None)
    audit_file = top.string("curtailment_audit_file", None)
    agent_client = _load_agent_client(top.section("agent_client"), here)
    production = load_production(top.section("production")) if top.has("production") else None
    top.done()
    if state_file is not None:
        _check_state_file(top, Path(path), here / state_file)
    web = None
    if web_file is not None:
        try:
            web = load_web_config(here / web_file)
        except ConfigError as exc:  # its own file: its problems keep their own file:line
            top.problems.items.extend(exc.problems)

    if interval is not None and timeout is not None and timeout > interval:
        poll.error("timeout_s", f"expected a number <= interval_s ({interval:g}), got {timeout:g}")
    if fleet_mw is not None and not oversubscribe:
        total_w = sum(s.allocation_w for s in sites)
        if total_w > fleet_mw * MW * (1 + 1e-9):
            fleet.error("allocation_mw", f"site allocations add up to {total_w / MW:g} MW, more than the fleet's "
                        f"{fleet_mw:g} MW (set allow_oversubscription: true if that is intended)")
    audit_path = here / audit_file if audit_file is not None else (
        (here / state_file).parent / "curtailment-audit.jsonl" if state_file is not None else None)
    acting = [s.id for s in sites if s.curtailment.mode in ("approve", "auto")]
    if acting and audit_path is None:
        top.error("curtailment_audit_file", f"site(s) {', '.join(acting)} send commands (curtailment mode approve or "
                  "auto): set curtailment_audit_file or state_file, so a restart knows which miners were curtailed")
    elif audit_file is not None and audit_path is not None:  # appended to, never replaced: a file in a folder
        if audit_path.is_dir():
            top.error("curtailment_audit_file", f"{str(audit_path)!r} is a directory; expected a file name")
        elif not audit_path.parent.is_dir():
            top.error("curtailment_audit_file", f"its directory {str(audit_path.parent)!r} does not exist")
    top.problems.raise_if_any()
    assert fleet_name is not None and fleet_mw is not None  # else raise_if_any() reported them
    return CollectorConfig(
        path=str(path), fleet_name=fleet_name, fleet_allocation_w=fleet_mw * MW,
        allow_oversubscription=oversubscribe, sites=tuple(sites), thresholds=thresholds, alerting=alerting,
        listen_address=address, listen_port=port, poll_interval_s=interval, poll_timeout_s=timeout,
        web=web, state_file=here / state_file if state_file is not None else None, agent_client=agent_client,
        curtailment_audit_file=audit_path,
        log_format=log_format, log_level=log_level, production=production,
    )


def is_host(value: str) -> bool:
    """An IP address or a well-formed host name (RFC 1123); checked by its form only, no DNS at load time."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def _check_state_file(top: Section, config: Path, state: Path) -> None:
    """The alert state is written beside `state` and renamed over it: refuse what that would break."""
    try:
        found = state.stat()
    except OSError:
        found = None
    if found is not None:
        if stat.S_ISDIR(found.st_mode):
            top.error("state_file", f"{str(state)!r} is a directory; expected a file name")
            return
        if not stat.S_ISREG(found.st_mode):
            top.error("state_file", f"{str(state)!r} is not a regular file")
            return
        if os.path.samefile(state, config):
            top.error("state_file", "is this config file itself; the collector would overwrite it with its "
                                    "alert state")
            return
    # The collector creates a missing directory at its first write: judge the nearest one that exists.
    folder = state.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        top.error("state_file", f"{str(folder)!r} is not a directory, so {str(state.parent)!r} cannot hold the "
                                "state")
    elif not os.access(folder, os.W_OK | os.X_OK):
        top.error("state_file", f"directory {str(folder)!r} is not writable (the state is written in "
                                f"{str(state.parent)!r} and renamed)")


def _load_agent_client(sec: Section, here: Path) -> AgentClient:
    ca = sec.string("ca_file", None)
    username = sec.string("username", None)
    password_file = sec.string("password_file", None)
    sec.done()
    ca_path = here / ca if ca is not None else None
    problem = file_problem(ca_path) if ca_path is not None else None
    if problem is not None:
        sec.error("ca_file", f"{problem}: {str(ca_path)!r}")
    if (username is None) != (password_file is None):
        sec.error("username" if username is None else "password_file",
                  "required with " + ("password_file" if username is None else "username"))
    password = None
    if password_file is not None:
        try:  # as carefully as a config file (a FIFO, /dev/zero); its contents are never shown
            password = yamlfile.decode(yamlfile.read_bytes(here / password_file, 64 << 10)).rstrip("\r\n")
        except YamlFileError as exc:
            sec.error("password_file", f"{str(here / password_file)!r}: {exc.message}")
    return AgentClient(ca_path, username, password)
