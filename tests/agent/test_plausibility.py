"""Implausible values: dropped as unknown, named on the miner, counted, never summed; the APIs stay JSON.

Unit tests drive `plausibility.check` directly (table-driven and with hypothesis). The per-dialect table takes
each simulated dialect's real reply bytes, writes a lie into its power, hashrate or temperature field (NaN,
+-Infinity, an absurd figure, a negative, a key given twice) and polls them through the real framing,
dialect and poller. The last tests run the real simulator, poller and agent web app, and the collector's
reader of the agent's JSON: two miners stating 1e308 W leave the other twenty counted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.agent.exposition import FleetCollector
from megawatch.agent.model import Board, Fan, MinerReading, PowerSource
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.plausibility import BOUNDS, FIELDS, MODEL_FACTOR, check
from megawatch.agent.poller import Poller
from megawatch.agent.protocol.errors import CommandRejected
from megawatch.agent.protocol.framing import DUPLICATE_KEY, NON_NUMBER, check_status, decode_reply
from megawatch.agent.state import FleetSnapshot, FleetState, MinerStatus
from megawatch.agent.web import make_app
from megawatch.collector.sources import parse_summary
from tests.conftest import DEFAULT_GROUPS

TABLE = load_model_table()
S19_PRO = TABLE.lookup("Antminer S19 Pro")
assert S19_PRO is not None


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and +-Infinity, as every strict JSON parser does."""
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def _reading(**changes: Any) -> MinerReading:
    base = MinerReading(
        dialect="bmminer", model="Antminer S19 Pro", hashrate_hs=110e12, hashrate_avg_hs=109e12,
        shares_accepted=1000, shares_rejected=3, shares_stale=0, hardware_errors=5, uptime_s=86_400.0,
        boards=tuple(Board(i, 70.0, 58.0, 36e12, 114) for i in range(3)), fans=tuple(Fan(i, 5400.0) for i in range(4)),
        power_w=3250.0, power_source=PowerSource.FIRMWARE, power_limit_w=3600.0, problems=("earlier note",))
    return base._replace(**changes)


# ---- The table of bounds ----

def test_every_bound_says_why_and_no_real_miner_crosses_it() -> None:
    assert FIELDS == (*BOUNDS, DUPLICATE_KEY, NON_NUMBER) and len(set(FIELDS)) == len(FIELDS)
    for name, bound in BOUNDS.items():
        assert bound.low < bound.high and bound.why and bound.unit, name
    # Figures of real units stay inside: a 3U hydro unit (~11 kW, ~1.2 PH/s), a hot chip, a server fan.
    assert check(_reading(power_w=11_200.0, model=None, hashrate_hs=1.16e15, hashrate_avg_hs=None,
                          boards=(Board(0, 125.0, 95.0, 0.4e15, 400),), fans=(Fan(0, 24_000.0),)), None)[1] == ()


def test_a_plausible_reading_comes_back_as_the_same_object() -> None:
    reading = _reading()
    assert check(reading, S19_PRO) == (reading, ())
    assert check(reading, S19_PRO)[0] is reading


# (where to put the value, the field counted): each setter writes one value into a plausible reading.
Setter = Callable[[float], dict[str, Any]]
SETTERS: dict[str, tuple[Setter, str]] = {
    "power_w": (lambda v: {"power_w": v}, "power_w"),
    "power_limit_w": (lambda v: {"power_limit_w": v}, "power_limit_w"),
    "hashrate_hs": (lambda v: {"hashrate_hs": v}, "hashrate_hs"),
    "hashrate_avg_hs": (lambda v: {"hashrate_avg_hs": v}, "hashrate_avg_hs"),
    "uptime_s": (lambda v: {"uptime_s": v}, "uptime_s"),
    "hardware_errors": (lambda v: {"hardware_errors": v}, "hardware_errors"),
    "boards[1].chip_temp_c": (lambda v: {"boards": (Board(0, 70.0), Board(1, v), Board(2, 71.0))}, "chip_temp_c"),
    "boards[0].board_temp_c": (lambda v: {"boards": (Board(0, 70.0, v),)}, "board_temp_c"),
    "boards[2].hashrate_hs": (lambda v: {"boards": (Board(2, 70.0, 60.0, v),)}, "board_hashrate_hs"),
    "boards[0].chips": (lambda v: {"boards": (Board(0, chips=v),)}, "chips"),
    "fans[3].rpm": (lambda v: {"fans": (Fan(0, 5000.0), Fan(3, v))}, "fan_rpm"),
}
LIES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "1e308": 1e308, "negative": -1000.0}


@pytest.mark.parametrize("lie", LIES, ids=list(LIES))
@pytest.mark.parametrize("where", SETTERS, ids=list(SETTERS))
def test_each_implausible_value_is_dropped_named_and_counted(where: str, lie: str) -> None:
    setter, counted = SETTERS[where]
    value = LIES[lie]
    if counted == "chips" or counted.startswith(("shares", "hardware")):
        value = -1 if lie == "negative" else (10**300 if lie == "1e308" else value)  # counts are ints
    reading = _reading(**setter(value))
    checked, dropped = check(reading, S19_PRO)
    assert dropped == (counted,)
    assert checked.problems[0] == "earlier note"
    (problem,) = checked.problems[1:]
    assert problem.startswith(f"{where}: ") and problem.endswith("dropped as unknown")
    assert check(checked, S19_PRO) == (checked, ())  # nothing implausible is left
    changed = [name for name in MinerReading._fields if getattr(checked, name) != getattr(reading, name)]
    assert set(changed) <= {"problems", "boards", "fans", counted, "power_source"}
    if counted == "power_w":
        assert checked.power_w is None and checked.power_source is None  # unknown, not 0 W, no source


def test_power_and_hashrate_are_judged_against_the_model_when_it_is_known() -> None:
    nominal_w = S19_PRO.nominal_power_w
    overclocked = _reading(power_w=1.6 * nominal_w, hashrate_hs=1.6 * S19_PRO.nominal_hashrate_hs)
    assert check(overclocked, S19_PRO)[1] == ()
    lying = _reading(power_w=(MODEL_FACTOR + 0.5) * nominal_w)
    checked, dropped = check(lying, S19_PRO)
    assert dropped == ("power_w",) and "for Antminer S19 Pro" in checked.problems[-1]
    # Without a model only the absolute bound applies: 15 kW may be a big unit, 25 kW is no single miner.
    assert check(_reading(model=None, power_w=15_000.0), None)[1] == ()
    assert check(_reading(model=None, power_w=25_000.0), None)[1] == ("power_w",)


def test_decoder_notes_are_named_and_counted_with_the_reading() -> None:
    notes = ((DUPLICATE_KEY, "reply: key 'Power' given 2 times with different values (3300, 9e9): read as unknown"),)
    checked, dropped = check(_reading(), S19_PRO, notes)
    assert dropped == (DUPLICATE_KEY,) and checked.problems[-1] == notes[0][1]


_ANY_FLOAT = st.none() | st.floats() | st.sampled_from([1e308, -1e308, 2.5e4, 7e15, 151.0, -41.0, 0.0, 0.5])


@settings(max_examples=300, deadline=None)
@given(power=_ANY_FLOAT, limit=_ANY_FLOAT, rate=_ANY_FLOAT, average=_ANY_FLOAT, uptime=_ANY_FLOAT,
       errors=st.none() | st.integers(min_value=-5, max_value=10**20),
       boards=st.lists(st.tuples(_ANY_FLOAT, _ANY_FLOAT, _ANY_FLOAT, st.none() | st.integers(-5, 20_000)),
                       max_size=4),
       fans=st.lists(_ANY_FLOAT, max_size=4), model=st.booleans())
def test_whatever_a_miner_says_what_is_left_is_plausible_and_every_drop_is_told(
        power: float | None, limit: float | None, rate: float | None, average: float | None,
        uptime: float | None, errors: int | None, boards: list[tuple[Any, ...]], fans: list[float | None],
        model: bool) -> None:
    reading = _reading(power_w=power, power_limit_w=limit, hashrate_hs=rate, hashrate_avg_hs=average,
                       uptime_s=uptime, hardware_errors=errors,
                       boards=tuple(Board(i, *values) for i, values in enumerate(boards)),
                       fans=tuple(Fan(i, rpm) for i, rpm in enumerate(fans)))
    spec = S19_PRO if model else None
    checked, dropped = check(reading, spec)
    if not dropped:
        assert checked is reading
    assert check(checked, spec) == (checked, ())  # what is left is within bounds: never NaN, inf or absurd
    before, after = _values(reading), _values(checked)
    changed = [k for k in before if not _same(before[k], after[k])]
    assert all(after[k] is None for k in changed)  # a value is only ever dropped, never altered or made 0
    assert len(changed) == len(dropped) == len(checked.problems) - len(reading.problems)


def _values(r: MinerReading) -> dict[str, Any]:
    out = {name: getattr(r, name) for name in ("power_w", "power_limit_w", "hashrate_hs", "hashrate_avg_hs",
                                               "uptime_s", "hardware_errors")}
    for b in r.boards:
        out.update({f"b{b.index}.{k}": getattr(b, k) for k in ("chip_temp_c", "board_temp_c", "hashrate_hs", "chips")})
    out.update({f"f{f.index}": f.rpm for f in r.fans})
    return out


def _same(a: Any, b: Any) -> bool:
    return a is b or a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


# ---- Per dialect: real reply bytes with a lie written in, through framing, dialect and poller ----

# Where each dialect states its draw, short-window hashrate and a temperature, and the hashrate key's unit.
DIALECT_KEYS: dict[str, dict[str, str]] = {
    "cgminer": {"hashrate": "MHS 5s", "temperature": "Temperature"},
    "bfgminer": {"hashrate": "MHS 20s", "temperature": "Temperature"},
    "bmminer": {"hashrate": "GHS 5s", "temperature": "temp2_1"},
    "btminer": {"power": "Power", "hashrate": "MHS 5s", "temperature": "Chip Temp Max"},
    "bosminer": {"power": "ApproximateMinerPowerConsumption", "hashrate": "MHS 5s", "temperature": "Chip"},
    "luxos": {"power": "Watts", "hashrate": "GHS 5s", "temperature": "temp2_1"},
    "avalon": {"hashrate": "MHS 30s"},
}
# A figure past every bound, in the key's own unit (1e12 MH/s or GH/s is at least 1e18 H/s).
ABSURD = {"power": "1e308", "hashrate": "1e12", "temperature": "180"}
# What each lie should be counted as, and a word its problem note holds.
COUNTED = {"power": ("power_w",), "hashrate": ("hashrate_hs", "board_hashrate_hs"),
           "temperature": ("chip_temp_c", "board_temp_c")}


@dataclass
class Lie:
    name: str
    rewrite: Callable[[bytes, str, bytes], bytes]  # (value bytes, quantity, key) -> new `"key":...` bytes tail
    counted: Callable[[str], tuple[str, ...]] = lambda _q: ()
    note: str = ""


LIE_TABLE = [
    Lie("NaN", lambda v, q, k: b"NaN", lambda _q: (NON_NUMBER,), "bare NaN"),
    Lie("Infinity", lambda v, q, k: b"Infinity", lambda _q: (NON_NUMBER,), "bare Infinity"),
    Lie("-Infinity", lambda v, q, k: b"-Infinity", lambda _q: (NON_NUMBER,), "bare -Infinity"),
    Lie("absurd", lambda v, q, k: ABSURD[q].encode(), lambda q: COUNTED[q], "implausible"),
    # A negative is the firmware's own "not measured" sentinel (-1 W, -273 °C): unknown, not a lie to count.
    Lie("negative", lambda v, q, k: b"-5"),
    Lie("duplicate-high", lambda v, q, k: v + b',"' + k + b'":' + ABSURD[q].encode(),
        lambda _q: (DUPLICATE_KEY,), "given 2 times"),
    Lie("duplicate-low", lambda v, q, k: v + b',"' + k + b'":1', lambda _q: (DUPLICATE_KEY,), "given 2 times"),
]


def _inject(raw: bytes, key: str, quantity: str, lie: Lie, written: list[int]) -> bytes:
    pattern = re.compile(rb'"' + re.escape(key.encode()) + rb'":\s*("?-?[0-9][0-9.eE+-]*"?)')
    out, count = pattern.subn(lambda m: b'"' + key.encode() + b'":' + lie.rewrite(m.group(1), quantity,
                                                                                  key.encode()), raw)
    written.append(count)
    return out


@dataclass
class _Served:
    replies: dict[str, dict[str, Any]]
    rejected: dict[str, CommandRejected] = field(default_factory=dict)
    reply_bytes: int = 0


def _bytes_query(miner: Any, rewrite: Callable[[bytes], bytes]) -> Callable[..., Any]:
    """A query() serving the simulated miner's real reply bytes, rewritten, through the real framing."""
    async def query(host: str, commands: tuple[str, ...], **_: Any) -> _Served:
        served = _Served({})
        for command in commands:
            raw = miner.reply(json.dumps({"command": command}).encode(), 1_700_000_000)[:-1]
            reply = decode_reply(rewrite(raw))
            try:
                check_status(reply)
            except CommandRejected as exc:
                served.rejected[command] = exc
                continue
            served.replies[command] = reply
        if not served.replies:
            raise CommandRejected("every command was refused")
        return served
    return query


def _one_miner_config(tmp_path: Path, dialect: str, address: str = "127.9.0.1") -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: s1\nminers:\n  - {{address: {address}, dialect: {dialect}}}\n")
    return load_agent_config(path)


async def _poll(config: AgentConfig, query: Callable[..., Any]) -> FleetSnapshot:
    poller = Poller(config, FleetState(config.site, len(config.miners)), query=query, deadlines=object())
    return await poller.poll_once()


def _quantity(reading: MinerReading, quantity: str) -> list[float | None]:
    if quantity == "power":
        return [reading.power_w] if reading.power_source is PowerSource.FIRMWARE else []
    if quantity == "hashrate":
        return [reading.hashrate_hs, *(b.hashrate_hs for b in reading.boards)]
    return [t for b in reading.boards for t in (b.chip_temp_c, b.board_temp_c)]


@pytest.mark.parametrize(("dialect", "model"), DEFAULT_GROUPS, ids=[f"{d}-{m.split()[-1]}" for d, m in DEFAULT_GROUPS])
async def test_lies_in_each_dialect_are_never_summed_and_are_named_and_counted(
        tmp_path: Path, make_sim_fleet: Any, dialect: str, model: str) -> None:
    sim = await make_sim_fleet(groups=((dialect, model),), sites=1)
    miner = sim.fleet.by_index[sim.miners[0].index]
    config = _one_miner_config(tmp_path, dialect)
    honest = (await _poll(config, _bytes_query(miner, lambda raw: raw))).miners[0].reading
    assert honest is not None and honest.problems == (), honest.problems
    failures: list[str] = []
    for quantity, key in DIALECT_KEYS[dialect].items():
        for lie in LIE_TABLE:
            written: list[int] = []
            rewrite = lambda raw, k=key, q=quantity, lie=lie, w=written: _inject(raw, k, q, lie, w)  # noqa: E731
            snap = await _poll(config, _bytes_query(miner, rewrite))
            case = f"{quantity} {key!r} {lie.name}"
            assert sum(written), f"{case}: the key is in no reply"
            reading = snap.miners[0].reading
            if reading is None:
                failures.append(f"{case}: the whole poll was lost")
                continue
            totals = snap.totals
            # Never summed: the site's totals stay those of a real miner, and no lie is left in the reading.
            if not (0 < totals.power_w <= BOUNDS["power_w"].high if honest.power_w else True) or \
                    not 0 <= totals.hashrate_hs <= BOUNDS["hashrate_hs"].high:
                failures.append(f"{case}: totals {totals.power_w} W, {totals.hashrate_hs} H/s")
            left = [v for v in _quantity(reading, quantity) if v is not None]
            if any(not math.isfinite(v) or v > {"power": 20_000, "hashrate": 5e15, "temperature": 150}[quantity]
                   or v == 1.0 or v < 0 for v in left):
                failures.append(f"{case}: {left} kept")
            counted = {name for name, n in snap.counters.implausible.items() if n}
            expected = set(lie.counted(quantity))
            if expected and not counted & expected:
                failures.append(f"{case}: counted {counted}, expected one of {expected}")
            if lie.note and not any(lie.note in p for p in reading.problems):
                failures.append(f"{case}: problems {reading.problems} do not say {lie.note!r}")
    assert not failures, "\n".join(failures)


async def test_avalon_wall_power_stated_inside_a_string_is_bounded_too(tmp_path: Path, make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(groups=(("avalon", "Avalon A1246"),), sites=1)
    miner = sim.fleet.by_index[sim.miners[0].index]
    config = _one_miner_config(tmp_path, "avalon")
    snap = await _poll(config, _bytes_query(miner, lambda raw: re.sub(rb"WALLPOWER\[\d+\]", b"WALLPOWER[1e308]", raw)))
    reading = snap.miners[0].reading
    assert reading is not None and snap.counters.implausible["power_w"] == 1
    assert reading.power_source is not PowerSource.FIRMWARE and snap.totals.power_w < 20_000
    assert any(p.startswith("power_w: 1e+308 W is implausible") for p in reading.problems)


# ---- The simulator's `lie` fault end to end: 20 honest miners stay counted beside 2 liars ----

def _sim_config(tmp_path: Path, sim: Any) -> AgentConfig:
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}}}\n" for m in sim.miners)
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: {sim.miners[0].site}\nagent_id: liars\nminers:\n{entries}"
                    "poll: {interval_s: 15, request_timeout_s: 2, connect_timeout_s: 1, jitter_s: 0}\n")
    return load_agent_config(path)


@pytest.mark.parametrize("duplicate", [0.0, 1.0], ids=["1e308", "duplicate-key"])
async def test_two_miners_stating_absurd_power_leave_twenty_counted(tmp_path: Path, make_sim_fleet: Any,
                                                                    duplicate: float) -> None:
    sim = await make_sim_fleet(groups=(("btminer", "Whatsminer M30S++"),), sites=1, per_group=22)
    liars, honest = sim.miners[:2], sim.miners[2:]
    sim.set_fault(liars, "lie", power_w=1e308 if not duplicate else 9e9, duplicate=duplicate)
    config = _sim_config(tmp_path, sim)
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state)  # real client, detection and dialect over loopback
    with capture_logs() as logs:
        await poller.poll_once()
        snap = await poller.poll_once()
    truth = (await sim.truth())["sites"][config.site]
    t = snap.totals
    assert (t.up, t.down, t.stale) == (22, 0, 0)
    by_name = {m.name: m for m in snap.miners}
    for m in honest:
        reading = by_name[m.address].reading
        assert reading is not None and reading.power_source is PowerSource.FIRMWARE and reading.problems == ()
    for m in liars:
        reading = by_name[m.address].reading
        assert reading is not None and reading.power_source is not PowerSource.FIRMWARE
        assert reading.problems and ("implausible" in reading.problems[0] or "given 2 times" in reading.problems[0])
    # The liars' draw is estimated from their hashrate, the 20 others are measured: the site is real watts.
    honest_w = sum(by_name[m.address].reading.power_w or 0.0 for m in honest)  # type: ignore[union-attr]
    assert t.power_firmware_w == pytest.approx(honest_w) and 0 < t.power_estimate_w < 2 * 20_000
    assert t.power_w == pytest.approx(truth["power_w"], rel=0.05)
    counted = "duplicate_key" if duplicate else "power_w"
    assert snap.counters.implausible[counted] == 4  # 2 liars x 2 cycles
    logged = sorted(e["miner"] for e in logs if e["event"] == "miner_implausible_values")
    assert logged == sorted(m.address for m in liars)  # once per miner, not once per poll

    # The agent's JSON is JSON, and the collector reading it keeps all 22 miners.
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    async with TestClient(TestServer(make_app(config, state, registry))) as client:
        bodies = {}
        for path in ("/api/v1/summary", "/api/v1/miners", "/healthz"):
            resp = await client.get(path)
            bodies[path] = strict_json(await resp.text())
        metrics = await (await client.get("/metrics", headers={"Accept-Encoding": "identity"})).text()
    summary = parse_summary(bodies["/api/v1/summary"])
    assert summary.miners_up == 22 and summary.power_w == pytest.approx(t.power_w)
    liar_rows = [row for row in bodies["/api/v1/miners"]["miners"] if row["miner"] in {m.address for m in liars}]
    assert len(liar_rows) == 2 and all(row["problems"] for row in liar_rows)
    assert f'megawatch_agent_implausible_values_total{{field="{counted}",site="{config.site}"}} 4.0' in metrics


async def test_agent_json_is_strict_even_if_a_figure_is_not_finite(tmp_path: Path) -> None:
    # Belt and braces: were a NaN or an infinity ever to reach a snapshot, the API says null, not NaN.
    config = _one_miner_config(tmp_path, "btminer")
    state = FleetState(config.site, 1)
    snap = await _poll(config, _never_called)
    reading = MinerReading(dialect="btminer", hashrate_hs=math.nan, power_w=math.inf,
                           power_source=PowerSource.FIRMWARE)
    miner = dataclasses.replace(snap.miners[0], reading=reading, status=MinerStatus.UP)
    state.publish(dataclasses.replace(snap, miners=(miner,), totals=dataclasses.replace(snap.totals,
                                                                                        hashrate_hs=math.nan)))
    async with TestClient(TestServer(make_app(config, state, CollectorRegistry()))) as client:
        summary = strict_json(await (await client.get("/api/v1/summary")).text())
        miners = strict_json(await (await client.get("/api/v1/miners")).text())
    assert summary["totals"]["hashrate_hs"] is None
    assert miners["miners"][0]["power_w"] is None and miners["miners"][0]["hashrate_hs"] is None


async def _never_called(*_: Any, **__: Any) -> Any:
    raise CommandRejected("nobody home")
