"""The simulated fleet's config (configs/sim/*.yaml): typed, frozen, every error with file:line:key."""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from megawatch.agent.modeltable import ModelSpec, ModelTable, load_model_table
from megawatch.common.configfile import ConfigError, Section
from megawatch.simulator.faults import FAULT_KINDS, LIMITS, PARAMETERS, Fault, make_fault
from megawatch.simulator.replies import DIALECTS, VENDORS

DEFAULT_PORT = 4028
DEFAULT_MINERS_PER_WORKER = 10_000
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True, slots=True)
class GroupConfig:
    count: int
    model: ModelSpec
    dialect: str
    allow_control: bool = False
    joins: bool = True  # False: answer any `a+b` request with E/14, as stock S19 builds do (pyasic)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """A fault for a fraction of a site (chosen from the seed) or for named miners."""

    fault: Fault
    fraction: float | None = None
    miners: tuple[str, ...] = ()


METER_MAPS: tuple[str, ...] = ("sunspec", "sdm630", "pm5100", "generic")
REGISTER_TYPES: dict[str, int] = {  # type -> registers it takes
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4,
}


@dataclass(frozen=True, slots=True)
class GenericLayout:
    """Where a generic meter puts its two figures: power (W) and energy imported (Wh)."""

    function: int = 3  # 3: holding registers, 4: input registers
    power_address: int = 0
    energy_address: int = 100
    type: str = "float32"
    word_order: str = "big"  # big: high word first
    power_scale: float = 1.0  # W per count
    energy_scale: float = 1.0  # Wh per count


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """A site's feeder meter, served over Modbus TCP: it reads (miners' true draw) x pue + aux + extra load."""

    host: str
    port: int  # 0 = any free port (printed at start, and in the ground truth)
    unit_id: int
    map: str
    pue: float = 1.0
    aux_w: float = 0.0  # the site's own load: cooling, lights, offices
    extra_load_w: float = 0.0  # non-miner load on the same feeder (a GPU hall), unknown to the miners
    generic: GenericLayout | None = None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    id: str
    address: str  # first miner's address
    port: int  # per-address mode: every miner on this port (0 = any free port); see port_base
    port_base: int | None  # consecutive ports on `address` instead of consecutive addresses
    ambient_c: float
    groups: tuple[GroupConfig, ...]
    faults: tuple[FaultConfig, ...] = ()
    meter: MeterConfig | None = None
    # Share of addresses holding a miner, from `address` on: below 1 the miners are spread with gaps (empty
    # addresses, as on a real subnet), chosen from the site id so every run has the same holes.
    density: float = 1.0

    @property
    def count(self) -> int:
        return sum(group.count for group in self.groups)

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of each miner, in order."""
        if self.port_base is not None:
            return [(self.address, self.port_base + i) for i in range(self.count)]
        first = int(ipaddress.IPv4Address(self.address))
        return [(str(ipaddress.IPv4Address(first + i)), self.port) for i in self.offsets()]

    def offsets(self) -> list[int]:
        """Each miner's distance from `address`: 0, 1, 2... or, with density below 1, with holes between."""
        if self.density >= 1.0:
            return list(range(self.count))
        salt = zlib.crc32(self.id.encode())
        out: list[int] = []
        offset = 0
        while len(out) < self.count:
            # Tuple hashing of ints is not salted per process: the same holes in every worker and run.
            if (hash((salt, offset)) & 0xFFFFFFFF) / 4294967296.0 < self.density:
                out.append(offset)
            offset += 1
        return out


@dataclass(frozen=True, slots=True)
class ControlConfig:
    host: str = "127.0.0.1"
    port: int = 9400
    token: str | None = field(default=None, repr=False)  # when set, every request needs it as a bearer token


@dataclass(frozen=True, slots=True)
class FleetConfig:
    seed: int
    tick_s: float
    control: ControlConfig
    sites: tuple[SiteConfig, ...]
    miners_per_worker: int = DEFAULT_MINERS_PER_WORKER

    @property
    def count(self) -> int:
        return sum(site.count for site in self.sites)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_token(value: str) -> bool:
    """A control token the config and the flag accept (long enough not to be guessed in a loopback flood)."""
    return 16 <= len(value) <= 256 and value.isprintable() and " " not in value


def _loopback_v4(text: str) -> ipaddress.IPv4Address:
    address = ipaddress.IPv4Address(text)
    if address not in _LOOPBACK:
        raise ValueError
    return address


def load_fleet_config(path: str | Path, models: ModelTable | None = None) -> FleetConfig:
    """Load and validate a fleet file; raises ConfigError listing every problem, one line each."""
    table = models if models is not None else load_model_table()
    top = Section.of_file(path, "simulator fleet config")
    seed = top.integer("seed", 1, minimum=0)
    tick_s = top.number("tick_s", 5.0, exclusive_minimum=0, maximum=3600)
    per_worker = top.integer("miners_per_worker", DEFAULT_MINERS_PER_WORKER, minimum=1, maximum=19_000)
    control_section = top.section("control")
    control_host = control_section.string("host", "127.0.0.1", check=is_loopback,
                                          expected="a loopback address (127.0.0.0/8, ::1 or localhost)")
    control_port = control_section.integer("port", 9400, minimum=0, maximum=65535)
    control_token = control_section.string("token", None)
    if control_token is not None and not is_token(control_token):
        # The value is not echoed: a near-miss of a secret is still a secret.
        control_section.error("token", "expected 16 to 256 printable characters without spaces")
        control_token = None
    control_section.done()

    sites: list[SiteConfig] = []
    seen_ids: set[str] = set()
    taken: list[tuple[str, int, int, str]] = []  # (kind, start, end, site id) to catch overlaps
    # Meter endpoints already claimed, with the control endpoint's among them: (host, port) -> who has it.
    endpoints: dict[tuple[str, int], str] = {}
    if control_host is not None and control_port:
        endpoints[(control_host, control_port)] = "the control endpoint"
    for site in top.sections("sites", required=True):
        parsed = _load_site(site, table, seen_ids, taken, endpoints)
        if parsed is not None:
            sites.append(parsed)
    top.done()
    if not top.problems.items and not sites:
        top.error("sites", "expected at least one site")
    top.problems.raise_if_any()
    return FleetConfig(
        seed=seed, tick_s=tick_s, control=ControlConfig(control_host, control_port, control_token), sites=tuple(sites),
        miners_per_worker=per_worker,
    )


def _load_site(site: Section, table: ModelTable, seen_ids: set[str],
               taken: list[tuple[str, int, int, str]], endpoints: dict[tuple[str, int], str]) -> SiteConfig | None:
    site_id = site.string("id")
    if site_id is not None:
        if site_id in seen_ids:
            site.error("id", f"duplicate site id {site_id!r}")
        seen_ids.add(site_id)
    address = site.get("address", _loopback_v4, expected="an IPv4 address in 127.0.0.0/8")
    port = site.integer("port", DEFAULT_PORT, minimum=0, maximum=65535)
    port_base = site.integer("port_base", None, minimum=1, maximum=65535)
    ambient = site.number("ambient_c", 25.0, minimum=-40, maximum=60)
    site_control = site.boolean("allow_control", False)
    density = site.number("density", 1.0, exclusive_minimum=0.01, maximum=1)
    if site.has("port") and site.has("port_base"):
        site.error("port_base", "give either port (one address per miner) or port_base (one port per miner)")

    groups: list[GroupConfig] = []
    for group in site.sections("groups", required=True):
        count = group.integer("count", minimum=1, maximum=1_000_000)
        model_name = group.string("model")
        dialect = group.choice("dialect", DIALECTS)
        allow = group.boolean("allow_control", site_control)
        joins = group.boolean("joins", True)
        group.done()
        spec = table.lookup(model_name) if model_name is not None else None
        if model_name is not None and spec is None:
            known = ", ".join(s.name for s in table.specs)
            group.error("model", f"{model_name!r} is not in the model table (known: {known})")
        if spec is not None and dialect is not None and dialect in VENDORS:
            vendors = VENDORS[dialect]
            if not any(spec.name.startswith(v) for v in vendors):
                group.error("model", f"{spec.name!r} does not run {dialect} (needs a {'/'.join(vendors)} model)")
        if count is not None and spec is not None and dialect is not None:
            groups.append(GroupConfig(count, spec, dialect, allow, joins))
    if site.has("groups") and not groups and not site.problems.items:
        site.error("groups", "expected at least one group")

    total = sum(g.count for g in groups)
    if address is not None and total and density is not None and port_base is None and density < 1:
        # The span the miners take with their holes: what must fit in 127/8 and not overlap another site.
        draft = SiteConfig(site_id or "?", str(address), port, None, ambient, tuple(groups), density=density)
        total = draft.offsets()[-1] + 1
    if address is not None and total:
        start = int(address)
        if port_base is not None:
            if port_base + total - 1 > 65535:
                site.error("port_base", f"{total} miners from port {port_base} run past 65535")
            _claim(site, taken, ("port", start), port_base, port_base + total - 1, site_id or "?")
        else:
            if start + total - 1 > int(ipaddress.IPv4Address("127.255.255.254")):
                site.error("address", f"{total} miners from {address} run past 127.255.255.254")
            _claim(site, taken, ("addr", port), start, start + total - 1, site_id or "?")

    names: set[str] | None = None
    if address is not None and groups:
        draft = SiteConfig(site_id or "?", str(address), port, port_base, ambient, tuple(groups),
                           density=density or 1.0)
        names = _miner_names(draft)
    fault_configs: list[FaultConfig] = []
    for item in site.sections("faults"):
        parsed = _load_fault(item, names, site_id)
        if parsed is not None:
            fault_configs.append(parsed)
    meter = _load_meter(site.section("meter"), endpoints, site_id or "?") if site.has("meter") else None
    site.done()
    if site_id is None or address is None or not groups:
        return None
    return SiteConfig(site_id, str(address), port, port_base, ambient, tuple(groups), tuple(fault_configs), meter,
                      density or 1.0)


def _load_meter(meter: Section, endpoints: dict[tuple[str, int], str], site_id: str) -> MeterConfig | None:
    host = meter.string("host", "127.0.0.1", check=is_loopback,
                        expected="a loopback address (127.0.0.0/8, ::1 or localhost)")
    port = meter.integer("port", 0, minimum=0, maximum=65535)
    # Unit id 0 answers every id (pymodbus's catch-all); 1-247 are RS-485 addresses; 255 is what devices that
    # are their own TCP server often use.
    unit_id = meter.integer("unit_id", 1, minimum=0, maximum=255)
    kind = meter.choice("map", METER_MAPS)
    pue = meter.number("pue", 1.0, minimum=1.0, maximum=3.0)
    aux_kw = meter.number("aux_kw", 0.0, minimum=0.0, maximum=1e6)
    extra_kw = meter.number("extra_load_kw", 0.0, minimum=0.0, maximum=1e7)
    generic = _load_generic(meter.section("generic")) if meter.has("generic") else None
    meter.done()
    if kind == "generic" and generic is None:
        generic = GenericLayout()
    if generic is not None and kind not in (None, "generic"):
        meter.error("generic", f"only a meter with map: generic takes a register layout (this one is {kind})")
    if host is not None and port:
        other = endpoints.get((host, port))
        if other is not None:
            meter.error("port", f"{host}:{port} is already taken by {other}")
        endpoints[(host, port)] = f"the meter of site {site_id!r}"
    if host is None or port is None or unit_id is None or kind is None or meter.problems.items:
        return None
    return MeterConfig(host, port, unit_id, kind, pue, aux_kw * 1000.0, extra_kw * 1000.0, generic)


def _load_generic(layout: Section) -> GenericLayout | None:
    function = layout.choice("function", ("holding", "input"), "holding")
    power_address = layout.integer("power_address", 0, minimum=0, maximum=65535)
    energy_address = layout.integer("energy_address", 100, minimum=0, maximum=65535)
    kind = layout.choice("type", tuple(REGISTER_TYPES), "float32")
    word_order = layout.choice("word_order", ("big", "little"), "big")
    power_scale = layout.number("power_scale", 1.0, exclusive_minimum=0)
    energy_scale = layout.number("energy_scale", 1.0, exclusive_minimum=0)
    layout.done()
    if None in (function, power_address, energy_address, kind, word_order, power_scale, energy_scale):
        return None
    width = REGISTER_TYPES[kind]
    if abs(power_address - energy_address) < width:
        layout.error("energy_address", f"registers {energy_address}-{energy_address + width - 1} overlap the power "
                                       f"registers {power_address}-{power_address + width - 1}")
        return None
    if max(power_address, energy_address) + width - 1 > 65535:
        layout.error("energy_address" if energy_address > power_address else "power_address",
                     f"a {kind} there runs past register 65535")
        return None
    return GenericLayout(3 if function == "holding" else 4, power_address, energy_address, kind, word_order,
                         power_scale, energy_scale)


def _claim(site: Section, taken: list[tuple[str, int, int, str]], kind: tuple[str, int], start: int, end: int,
           site_id: str) -> None:
    label = f"{kind[0]}:{kind[1]}"
    for other_label, other_start, other_end, other_id in taken:
        if other_label == label and start <= other_end and other_start <= end:
            site.error("address", f"miners overlap those of site {other_id!r}")
            return
    taken.append((label, start, end, site_id))


def _load_fault(item: Section, names: set[str] | None, site_id: str | None) -> FaultConfig | None:
    kind = item.choice("fault", FAULT_KINDS)
    fraction = item.number("fraction", None, minimum=0, maximum=1)
    miners = item.strings("miners", ())
    params: dict[str, float] = {}
    for name in PARAMETERS.get(kind or "", {}):
        low, high = LIMITS[name]
        value = item.number(name, None, minimum=low, maximum=high)
        if value is not None:
            params[name] = value
    item.done()
    if (fraction is None) == (not miners):
        item.error("fault", "give exactly one of fraction (share of the site) or miners (addresses)")
        return None
    unknown = [name for name in miners if names is not None and name not in names]
    if unknown:
        item.error("miners", f"{', '.join(map(repr, unknown))} not a miner of site {site_id!r}")
    if kind is None or unknown:
        return None
    try:
        fault = make_fault(kind, params)
    except ValueError as exc:
        item.error("fault", str(exc))
        return None
    return FaultConfig(fault, fraction, tuple(miners))


def _miner_names(config: SiteConfig) -> set[str]:
    """How a fault may name a site's miners: "host:port", or just "host" when each has its own address."""
    names = set()
    for host, port in config.endpoints():
        names.add(f"{host}:{port}")
        if config.port_base is None:
            names.add(host)
    return names


__all__ = [
    "ConfigError",
    "ControlConfig",
    "FaultConfig",
    "FleetConfig",
    "GenericLayout",
    "GroupConfig",
    "MeterConfig",
    "SiteConfig",
    "is_loopback",
    "is_token",
    "load_fleet_config",
]
