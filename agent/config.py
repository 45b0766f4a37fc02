"""The agent's config file (configs/agent*.yaml): typed, frozen, validated once at start.

Miners are listed as explicit addresses, CIDR blocks or address ranges; every entry may carry a model
and dialect hint and a port. Every problem is reported as `file:line: key: problem` (common/configfile).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from megawatch.agent.dialects import DIALECTS
from megawatch.agent.modeltable import DEFAULT_MODELS_PATH, ModelTable, load_model_table
from megawatch.common.configfile import ConfigError, Section, as_number, describe
from megawatch.common.logs import load_log_settings
from megawatch.common.webconfig import WebConfig, load_web_config
from megawatch.common.yamlfile import file_problem

DEFAULT_PORT = 4028
# A typo such as /8 instead of /28 would make the agent poll 16 million addresses; refuse it at load.
MAX_MINERS_PER_ENTRY = 65_536
MAX_MINERS = 100_000

@dataclass(frozen=True, slots=True)
class MinerTarget:
    """One miner to poll. `name` is its `miner` label: host:port."""

    address: str
    port: int = DEFAULT_PORT
    model: str | None = None  # overrides the model the miner reports (power estimates use it)
    dialect: str | None = None  # skips detection when given
    # False: "a miner may be here" (expect: maybe, the default for cidr entries). Found by rescans; an address
    # where nothing answers is not a miner and never counts as down (docs/discovery.md).
    expected: bool = True

    @property
    def name(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PollSettings:
    """Scheduling and per-poll limits; every duration in seconds."""

    interval_s: float = 15.0
    connect_timeout_s: float = 3.0
    request_timeout_s: float = 10.0  # the whole poll of one miner: connect, every command, every byte
    concurrency: int = 512
    max_reply_bytes: int = 1 << 20
    jitter_s: float = 0.5  # each cycle starts up to this much late so agents do not poll in lock-step
    stale_grace_s: float = 60.0  # a failed miner's last reading is kept (marked stale) this long
    backoff_max_cycles: int = 8  # an unreachable miner skips at most this many cycles between retries
    redetect_after_failures: int = 3


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: str = "127.0.0.1"
    port: int = 9540


@dataclass(frozen=True, slots=True)
class ExpositionSettings:
    """Optional per-miner series; off by default to keep each miner within 25 series."""

    board_temperatures: bool = False  # add sensor="board" beside sensor="chip"
    all_pools: bool = False  # pool_info for every configured pool, not only the active one


@dataclass(frozen=True, slots=True)
class AccountingSettings:
    """What a miner whose draw is not known now is allowed for (docs/accounting.md); never 0 W."""

    # A miner that stops answering keeps its last known draw this long (a hung API does not stop the hashing),
    # then the larger of its model's nameplate and that draw.
    last_known_horizon_s: float = 3600.0
    # A miner never read, or read without a power figure and with no model in the table: a large miner's draw.
    unknown_miner_w: float = 3500.0
    # Added to the allowance on every draw taken from the model table (J/TH x hashrate, nameplate): the table
    # holds a model's nominal figures, and a real unit draws more by its own spread, a hot intake, wear and PSU
    # loss - a few percent each and they add up; 10% keeps the upper bound above a unit at the bad end of all.
    estimate_margin_ratio: float = 0.10
    # The same for draws the firmware reports: 0, firmware sensors being within a few percent; set it for a
    # firmware known to under-report.
    firmware_margin_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """Scan ranges (entries with expect: maybe) and the inventory of what was found (docs/discovery.md)."""

    rescan_interval_s: float = 600.0  # how often the agent looks for miners that joined a scan range
    connect_timeout_s: float = 1.0  # a silent address on a real network costs this much per rescan
    concurrency: int = 256
    # A discovered miner that has not answered for this long leaves the count (miner_vanished); until then it is
    # down and counted in the allowance. Listed (expected) miners are never dropped.
    forget_after_s: float = 86_400.0
    state_file: Path | None = None  # the inventory, kept across restarts; None keeps it in memory only


@dataclass(frozen=True, slots=True)
class AgentConfig:
    site: str
    agent_id: str
    miners: tuple[MinerTarget, ...]
    poll: PollSettings
    http: HttpSettings
    exposition: ExpositionSettings
    models_path: Path
    models: ModelTable
    log_format: str = "auto"
    log_level: str = "info"
    control_enabled: bool = False  # passed to the client's allow_control; read-only unless set
    path: str = ""
    web: WebConfig | None = None  # TLS and basic auth for every endpoint (web_config_file)
    accounting: AccountingSettings = AccountingSettings()
    discovery: DiscoverySettings = DiscoverySettings()


@dataclass(frozen=True, slots=True)
class _Entry:
    """One `miners[i]` item before expansion, kept for overlap messages."""

    key: str
    line: int | None
    what: str  # "address 127.1.0.1", "cidr 127.1.0.0/28", ...
    addresses: range  # integer addresses
    version: int  # 4 or 6
    port: int
    model: str | None
    dialect: str | None
    expected: bool = True


def load_agent_config(path: str | Path) -> AgentConfig:
    """Load and validate an agent config; raise ConfigError listing every problem."""
    top = Section.of_file(path, "agent config")
    site = top.string("site", check=_is_label, expected="a non-empty name without spaces")
    agent_id = top.string("agent_id", None, check=_is_label, expected="a non-empty name without spaces")
    poll = _load_poll(top.section("poll"))
    http = _load_http(top.section("http"))
    exposition = _load_exposition(top.section("exposition"))
    accounting = _load_accounting(top.section("accounting"))
    discovery = _load_discovery(top.section("discovery"), Path(path).parent)
    # A relative models_file is read from beside the agent config, wherever the agent is started from.
    models_path = Path(path).parent / top.string("models_file", str(DEFAULT_MODELS_PATH))
    log_format, log_level = load_log_settings(top.section("log"))
    control_enabled = top.boolean("control_enabled", False)
    web_file = top.string("web_config_file", None)

    models = _load_models(top, models_path)
    entries = [_load_entry(item, models) for item in top.sections("miners", required=True)]
    if top.has("miners") and isinstance(top.data["miners"], list) and not top.data["miners"]:
        top.error("miners", "expected at least one miner")
    miners = _expand(top, [e for e in entries if e is not None])
    top.done()
    web = None
    if web_file is not None:
        try:  # relative to the agent config, as models_file is
            web = load_web_config(Path(path).parent / web_file)
        except ConfigError as exc:  # its own file: its problems keep their own file:line
            top.problems.items.extend(exc.problems)
    # Read in dependency order, reported in file order (the model table's own problems last).
    top.problems.items.sort(key=lambda p: (p.path != top.problems.path, p.line or 0))
    top.problems.raise_if_any()
    assert models is not None  # a failed model table was reported above
    assert site is not None  # so was a missing or bad site
    return AgentConfig(
        site=site,
        # With the port: two shards of one site on one host (one agent per core) get different names.
        agent_id=agent_id or f"{site}@{socket.gethostname()}:{http.port}",
        miners=miners,
        poll=poll,
        http=http,
        exposition=exposition,
        models_path=models_path,
        models=models,
        log_format=log_format,
        log_level=log_level,
        control_enabled=control_enabled,
        path=str(path),
        web=web,
        accounting=accounting,
        discovery=discovery,
    )


def _is_label(value: str) -> bool:
    return not any(c.isspace() for c in value)


def _load_poll(sec: Section) -> PollSettings:
    d = PollSettings()
    interval = sec.number("interval_s", d.interval_s, minimum=1)
    connect = sec.number("connect_timeout_s", d.connect_timeout_s, exclusive_minimum=0)
    request = sec.number("request_timeout_s", d.request_timeout_s, exclusive_minimum=0)
    concurrency = sec.integer("concurrency", d.concurrency, minimum=1, maximum=16_384)
    max_reply = sec.integer("max_reply_bytes", d.max_reply_bytes, minimum=4096, maximum=64 << 20)
    jitter = sec.number("jitter_s", d.jitter_s, minimum=0)
    grace = sec.number("stale_grace_s", d.stale_grace_s, minimum=0)
    backoff = sec.integer("backoff_max_cycles", d.backoff_max_cycles, minimum=0, maximum=1000)
    redetect = sec.integer("redetect_after_failures", d.redetect_after_failures, minimum=1)
    sec.done()
    if connect > request:
        sec.error("connect_timeout_s", f"must not exceed request_timeout_s ({request:g}), got {connect:g}")
    if request >= interval:
        sec.error("request_timeout_s", f"must be below interval_s ({interval:g}) so a hung miner "
                                        f"cannot stretch a cycle, got {request:g}")
    if jitter > interval / 2:
        sec.error("jitter_s", f"must be at most half of interval_s ({interval / 2:g}), got {jitter:g}")
    return PollSettings(interval, connect, request, concurrency, max_reply, jitter, grace, backoff, redetect)


def _load_http(sec: Section) -> HttpSettings:
    d = HttpSettings()
    listen = sec.string("listen", d.listen, check=_is_ip, expected="an IP address")
    port = sec.integer("port", d.port, minimum=0, maximum=65535)
    sec.done()
    return HttpSettings(listen, port)


def _load_exposition(sec: Section) -> ExpositionSettings:
    d = ExpositionSettings()
    settings = ExpositionSettings(
        board_temperatures=sec.boolean("board_temperatures", d.board_temperatures),
        all_pools=sec.boolean("all_pools", d.all_pools),
    )
    sec.done()
    return settings


def _load_accounting(sec: Section) -> AccountingSettings:
    d = AccountingSettings()
    settings = AccountingSettings(
        last_known_horizon_s=sec.number("last_known_horizon_s", d.last_known_horizon_s, minimum=0),
        # 0 W would count a miner nobody can see as drawing nothing: the very optimism this setting prevents.
        unknown_miner_w=sec.number("unknown_miner_w", d.unknown_miner_w, exclusive_minimum=0),
        estimate_margin_ratio=_margin(sec, "estimate_margin_ratio", d.estimate_margin_ratio),
        firmware_margin_ratio=_margin(sec, "firmware_margin_ratio", d.firmware_margin_ratio),
    )
    sec.done()
    return settings


def _margin(sec: Section, name: str, default: float) -> float:
    # A negative margin would lower the upper bound below the estimate; 1 or more doubles the figure (a typo).
    return sec.get(name, as_number, default, expected="a number >= 0 and < 1", check=lambda v: 0 <= v < 1)


def _load_discovery(sec: Section, base: Path) -> DiscoverySettings:
    d = DiscoverySettings()
    state_file = sec.string("state_file", None)
    settings = DiscoverySettings(
        rescan_interval_s=sec.number("rescan_interval_s", d.rescan_interval_s, minimum=10),
        connect_timeout_s=sec.number("connect_timeout_s", d.connect_timeout_s, exclusive_minimum=0, maximum=30),
        concurrency=sec.integer("concurrency", d.concurrency, minimum=1, maximum=4096),
        forget_after_s=sec.number("forget_after_s", d.forget_after_s, minimum=0),
        # Relative to the agent config, as models_file is.
        state_file=base / state_file if state_file else None,
    )
    sec.done()
    return settings


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _load_models(top: Section, models_path: Path) -> ModelTable | None:
    problem = file_problem(models_path)
    if problem is not None:
        top.error("models_file", f"{problem}: {str(models_path)!r}")
        return None
    try:
        return load_model_table(models_path)
    except ConfigError as exc:
        # The model table is its own file: its problems keep their own file:line.
        top.problems.items.extend(exc.problems)
        return None


def _load_entry(item: Section, models: ModelTable | None) -> _Entry | None:
    kinds = [k for k in ("address", "cidr", "range") if item.has(k)]
    port = item.integer("port", DEFAULT_PORT, minimum=1, maximum=65535)
    model: str | None = item.string("model", None)
    dialect: str | None = item.string("dialect", None)
    expect = item.choice("expect", ("present", "maybe"), None)
    if dialect is not None and dialect not in DIALECTS:
        item.error("dialect", f"unknown dialect {dialect!r} (known: {', '.join(sorted(DIALECTS))})")
        dialect = None
    if model is not None and models is not None and models.lookup(model) is None:
        item.error("model", f"{model!r} is not in the model table (power could not be estimated)")
    for k in ("address", "cidr", "range"):
        item.raw(k, None)  # mark as known before done()
    item.done()
    if not item.valid:
        return None
    if len(kinds) != 1:
        found = f"got {', '.join(kinds)}" if kinds else "got none"
        item.problems.add(item.line, item.key_path, f"expected exactly one of address, cidr, range; {found}")
        return None
    kind = kinds[0]
    value = item.data[kind]
    if not isinstance(value, str):
        item.error(kind, f"expected a string, got {describe(value)}")
        return None
    parsed = parse_addresses(kind, value.strip())
    if isinstance(parsed, str):
        item.error(kind, parsed)
        return None
    addresses, version = parsed
    # A block describes a network, where gaps are normal; an address or a range lists miners one expects.
    expected = (expect or ("maybe" if kind == "cidr" else "present")) == "present"
    count = addresses.stop - addresses.start  # not len(): an IPv6 /64 holds more than a C integer can count
    if count > MAX_MINERS_PER_ENTRY:
        item.error(kind, f"{describe(value)} holds {count:,} addresses; at most {MAX_MINERS_PER_ENTRY:,} "
                         f"per entry")
        return None
    return _Entry(item.key(kind), item.line_of(kind), f"{kind} {value}", addresses, version, port, model,
                  dialect, expected)


def parse_addresses(kind: str, value: str) -> tuple[range, int] | str:
    """Expand one entry to integer addresses (a range, so /16 blocks stay cheap); a str is the problem."""
    if kind == "address":
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return f"{describe(value)} is not an IP address"
        return range(int(ip), int(ip) + 1), ip.version
    if kind == "cidr":
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            return f"{describe(value)} is not a CIDR block ({exc})"
        # Network and broadcast addresses are not hosts, except in /31 and /32 blocks.
        start, end = int(net.network_address), int(net.broadcast_address)
        if net.num_addresses > 2:
            start, end = start + 1, end - 1
        return range(start, end + 1), net.version
    lo_text, sep, hi_text = value.partition("-")
    if not sep:
        return f"{describe(value)} is not a range (expected FIRST-LAST, e.g. 127.1.0.1-127.1.0.200)"
    try:
        lo, hi = ipaddress.ip_address(lo_text.strip()), ipaddress.ip_address(hi_text.strip())
    except ValueError as exc:
        return f"{describe(value)} is not a range ({exc})"
    if lo.version != hi.version or int(hi) < int(lo):
        return f"{describe(value)} is not a range (the last address must not be before the first)"
    return range(int(lo), int(hi) + 1), lo.version


def _expand(top: Section, entries: list[_Entry]) -> tuple[MinerTarget, ...]:
    owner: dict[tuple[int, int, int], _Entry] = {}
    targets: list[MinerTarget] = []
    reported: set[tuple[str, str]] = set()
    for entry in entries:
        make = ipaddress.IPv4Address if entry.version == 4 else ipaddress.IPv6Address
        for number in entry.addresses:
            key = (entry.version, number, entry.port)
            prior = owner.get(key)
            if prior is not None:
                # One line per pair of entries, not one per address: a /24 overlap is one mistake.
                if (prior.key, entry.key) not in reported:
                    reported.add((prior.key, entry.key))
                    top.problems.add(entry.line, entry.key, f"{make(number)} port {entry.port} is already "
                                                            f"listed by {prior.key} ({prior.what})")
                continue
            owner[key] = entry
            targets.append(MinerTarget(str(make(number)), entry.port, entry.model, entry.dialect, entry.expected))
        if len(targets) > MAX_MINERS:
            top.problems.add(entry.line, entry.key, f"more than {MAX_MINERS:,} miners in total")
            break
    return tuple(targets)
