"""Poller: one cycle polls every due miner once, failures are typed and isolated, state changes logged once.

These drive `poll_once()` against an in-process fake `query` (same signature as agent.protocol.client.query)
and a fake dialect, with an injected clock: no sleeps. Real sockets are covered further down.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.agent.model import MinerReading, PowerSource
from megawatch.agent.poller import Poller
from megawatch.agent.protocol.errors import (
    BadReply,
    CommandRejected,
    ConnectFailed,
    ErrorKind,
    ReplyTooLarge,
)
from megawatch.agent.state import FleetState, MinerStatus


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Result:
    replies: dict[str, dict[str, Any]]
    rejected: dict[str, CommandRejected] = field(default_factory=dict)
    reply_bytes: int = 0


def _parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    s = replies["summary"]["SUMMARY"][0]
    return MinerReading(dialect="fake", model=s.get("model"), hashrate_hs=s["hs"],
                        firmware_version=s.get("fw"), power_w=s.get("w"),
                        power_source=PowerSource.FIRMWARE if s.get("w") is not None else None)


FAKE = SimpleNamespace(NAME="fake", COMMANDS=("summary", "pools"), JOINABLE=True, parse=_parse)
OTHER = SimpleNamespace(NAME="other", COMMANDS=("summary",), JOINABLE=False, parse=_parse)
DIALECTS = {"fake": FAKE, "other": OTHER}


def _detect(replies: Mapping[str, Mapping[str, Any]]) -> str:
    return str(replies["version"]["VERSION"][0]["dialect"])


class FakeFleet:
    """Miners by address: a behaviour name, a hashrate, and what they answer."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.behaviour: dict[str, str] = {}
        self.hashrate: dict[str, float] = {}
        self.firmware: dict[str, str] = {}
        self.dialect: dict[str, str] = {}
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.in_flight = self.max_in_flight = 0
        self.reply_s = 0.01

    async def query(self, host: str, commands: tuple[str, ...], *, port: int, deadlines: Any,
                    max_reply_bytes: int, allow_control: bool) -> Result:
        assert allow_control is False  # read-only unless the config says otherwise
        self.calls.append((host, commands))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # yield, as a real socket would, so concurrency is observable
            self.clock.advance(self.reply_s)
            how = self.behaviour.get(host, "ok")
            if how == "refused":
                raise ConnectFailed("connection refused")
            if how == "hang":
                await asyncio.Event().wait()
            if how == "garbage":
                raise BadReply("no JSON", b"\x00\xff")
            if how == "huge":
                raise ReplyTooLarge("reply over cap", max_reply_bytes)
            if how == "no_join" and len(commands) > 1:
                raise CommandRejected("Invalid command", code=14)
            if how == "api_error":
                raise CommandRejected("Access denied", code=45)
            return Result({c: self._reply(host, c) for c in commands})
        finally:
            self.in_flight -= 1

    def _reply(self, host: str, command: str) -> dict[str, Any]:
        if command == "version":
            return {"VERSION": [{"dialect": self.dialect.get(host, "fake")}]}
        if command == "summary":
            return {"SUMMARY": [{"hs": self.hashrate.get(host, 100e12), "model": "S19",
                                 "fw": self.firmware.get(host, "1.0")}]}
        return {command.upper(): []}


def _config(tmp_path: Path, n: int, **poll: Any) -> AgentConfig:
    settings = {"interval_s": 15, "request_timeout_s": 5, "connect_timeout_s": 1, "jitter_s": 0,
                "stale_grace_s": 40, **poll}
    lines = "".join(f"  {k}: {v}\n" for k, v in settings.items())
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: t1\nminers:\n  - range: 127.9.0.1-127.9.0.{n}\npoll:\n{lines}")
    return load_agent_config(path)


def _poller(config: AgentConfig, fleet: FakeFleet) -> tuple[Poller, FleetState]:
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state, query=fleet.query, deadlines=object(), clock=fleet.clock,
                    dialects=DIALECTS, detect=_detect)
    return poller, state


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet(FakeClock())


async def test_cycle_reads_every_miner_once_with_bounded_concurrency(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 50, concurrency=8)
    poller, state = _poller(config, fleet)
    snap = await poller.poll_once()
    assert state.snapshot is snap and snap.cycle == 1
    assert snap.totals.up == 50 and snap.totals.hashrate_hs == pytest.approx(50 * 100e12)
    # First cycle: detection (version+devdetails) then the dialect's join, per miner.
    assert len(fleet.calls) == 100 and fleet.max_in_flight == 8
    fleet.calls.clear()
    await poller.poll_once()
    assert sorted(fleet.calls) == sorted((f"127.9.0.{i}", ("summary", "pools")) for i in range(1, 51))
    # S19 is in the model table: power is estimated, never absent, never 0.
    assert state.snapshot.totals.power_estimate_w > 0 and state.snapshot.totals.power_unknown_miners == 0


async def test_each_failure_is_counted_under_its_kind_and_isolated(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 6)
    fleet.behaviour.update({"127.9.0.1": "refused", "127.9.0.2": "garbage", "127.9.0.3": "huge",
                            "127.9.0.4": "api_error"})
    poller, _ = _poller(config, fleet)
    snap = await poller.poll_once()
    polls = snap.counters.polls
    assert (polls["ok"], polls["unreachable"], polls["malformed"], polls["too_large"], polls["api_error"]) == \
        (2, 1, 1, 1, 1)
    by_name = {m.name: m for m in snap.miners}
    assert by_name["127.9.0.2:4028"].last_error is ErrorKind.MALFORMED
    assert by_name["127.9.0.5:4028"].status is MinerStatus.UP
    assert snap.totals.down == 4 and snap.totals.power_unknown_miners == 4


async def test_hung_miner_costs_only_its_own_deadline(tmp_path: Path) -> None:
    # Real time here: the deadline is the thing under test. 0.3 s bounds the whole test.
    fleet = FakeFleet(FakeClock())
    config = _config(tmp_path, 20, request_timeout_s=0.3, connect_timeout_s=0.1, concurrency=4)
    fleet.behaviour["127.9.0.1"] = "hang"
    poller, _ = _poller(config, fleet)
    t0 = time.monotonic()
    snap = await poller.poll_once()
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 0.3 + 0.5
    assert snap.totals.up == 19
    assert snap.counters.polls["timeout"] == 1


async def test_stale_then_down_never_zero_watts(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 2, interval_s=15, stale_grace_s=40)
    poller, _ = _poller(config, fleet)
    await poller.poll_once()
    fleet.behaviour["127.9.0.1"] = "garbage"  # answers, so no backoff: polled every cycle
    ages = []
    for _ in range(4):
        fleet.clock.advance(15)
        snap = await poller.poll_once()
        m = snap.miners[0]
        ages.append((m.status, m.stale_age_s is not None))
        if m.status is MinerStatus.STALE:
            assert m.power_w is not None and m.power_w > 0  # last reading still counts
        else:
            assert m.power_w is None  # unknown, not 0
    assert [a[0] for a in ages] == [MinerStatus.STALE, MinerStatus.STALE, MinerStatus.DOWN, MinerStatus.DOWN]
    assert snap.totals.power_unknown_miners == 1 and snap.totals.stale == 0


async def test_unreachable_miner_backs_off_but_is_retried(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 1, backoff_max_cycles=4)
    fleet.behaviour["127.9.0.1"] = "refused"
    poller, _ = _poller(config, fleet)
    polled_in = []
    for cycle in range(1, 21):
        before = len(fleet.calls)
        await poller.poll_once()
        if len(fleet.calls) > before:
            polled_in.append(cycle)
    # failures 1,2,3,4 skip 0,1,3,7 cycles, capped at 4
    assert polled_in == [1, 2, 4, 8, 13, 18]
    fleet.behaviour["127.9.0.1"] = "ok"
    for _ in range(5):
        snap = await poller.poll_once()
    assert snap.miners[0].status is MinerStatus.UP


async def test_join_refused_falls_back_to_single_commands_and_remembers(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 1)
    fleet.behaviour["127.9.0.1"] = "no_join"
    poller, _ = _poller(config, fleet)
    snap = await poller.poll_once()
    assert snap.miners[0].status is MinerStatus.UP
    fleet.calls.clear()
    await poller.poll_once()
    # Remembered: no join attempt any more, one connection per command.
    assert fleet.calls == [("127.9.0.1", ("summary",)), ("127.9.0.1", ("pools",))]


async def test_state_changes_logged_once_not_per_poll(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 2)
    poller, _ = _poller(config, fleet)
    with capture_logs() as logs:
        await poller.poll_once()
        await poller.poll_once()
        fleet.behaviour["127.9.0.2"] = "garbage"
        for _ in range(3):
            await poller.poll_once()
        fleet.behaviour["127.9.0.2"] = "ok"
        await poller.poll_once()
        await poller.poll_once()
    events = [(e["event"], e.get("miner")) for e in logs if e["log_level"] != "debug"]
    assert events == [
        ("dialect_detected", "127.9.0.1:4028"), ("dialect_detected", "127.9.0.2:4028"),
        ("miner_down", "127.9.0.2:4028"),
        ("miner_up", "127.9.0.2:4028"),
    ]


async def test_firmware_change_triggers_redetection(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 1)
    poller, _ = _poller(config, fleet)
    await poller.poll_once()
    fleet.firmware["127.9.0.1"] = "2.0"
    fleet.dialect["127.9.0.1"] = "other"
    with capture_logs() as logs:
        await poller.poll_once()  # reads fw 2.0 with the old dialect, schedules detection
        fleet.calls.clear()
        snap = await poller.poll_once()
    # Detection names the new dialect, and with that proof the new firmware is exported at once (not after
    # the polls a mere version change waits for): the inventory logs it once.
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == ["dialect_changed", "miner_firmware_changed"]
    changed = next(e for e in logs if e["event"] == "dialect_changed")
    assert changed["dialect"] == "other" and changed["previous"] == "fake"
    assert snap.miners[0].dialect == "other"
    assert fleet.calls[-1] == ("127.9.0.1", ("summary",))  # "other" does not join


async def test_dialect_hint_skips_detection(tmp_path: Path, fleet: FakeFleet) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: t1\nminers:\n  - {address: 127.9.0.1, dialect: bmminer, model: S21}\n")
    config = load_agent_config(path)
    state = FleetState("t1", 1)
    poller = Poller(config, state, query=fleet.query, deadlines=object(), clock=fleet.clock,
                    dialects={"bmminer": FAKE}, detect=_detect)
    snap = await poller.poll_once()
    assert fleet.calls == [("127.9.0.1", ("summary", "pools"))]
    # The model hint overrides the reported "S19": the estimate uses S21's J/TH (17.5).
    assert snap.miners[0].reading is not None and snap.miners[0].reading.model == "S21"
    assert snap.totals.power_estimate_w == pytest.approx(100 * 17.5)


async def test_overrun_counted_each_time_logged_once(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 4, interval_s=15, concurrency=1)
    poller, _ = _poller(config, fleet)
    fleet.reply_s = 5.0  # 4 miners, serial, 2 calls each on the first cycle: 40 s > 15 s
    with capture_logs() as logs:
        await poller.poll_once()
        await poller.poll_once()
        fleet.reply_s = 0.01
        snap = await poller.poll_once()
    assert snap.counters.overruns == 2 and snap.counters.cycles == 3
    assert [e["event"] for e in logs if e["event"].startswith("cycle_over")] == ["cycle_overrun", "cycle_overrun_ended"]


# ---- Real sockets: the wire client against tiny asyncio.start_server miners on 127.0.0.1 ----

def _envelope(command: str) -> dict[str, Any]:
    status = [{"STATUS": "S", "When": 1700000000, "Code": 11, "Msg": "ok", "Description": "cgminer 4.11.1"}]
    body: dict[str, Any] = {"version": {"VERSION": [{"dialect": "fake"}]},
                            "summary": {"SUMMARY": [{"hs": 50e12, "model": "S19", "fw": "1.0"}]}}.get(command, {})
    return {"STATUS": status, **body, "id": 1}


async def _serve_miner(how: str) -> tuple[asyncio.Server, int]:
    import json as _json

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await reader.read(4095)
            if how == "hang":
                await asyncio.Event().wait()
            if how == "empty":
                return
            if how == "garbage":
                writer.write(b"\xffnot json at all\x00")
                return
            if how == "huge":
                writer.write(b'{"STATUS":[{"STATUS":"S"}],"X":"' + b"a" * 200_000)
                await writer.drain()
                return
            names = _json.loads(raw)["command"].split("+")
            if len(names) == 1:
                reply: dict[str, Any] = _envelope(names[0])
            elif how == "no_join":
                reply = {"STATUS": [{"STATUS": "E", "When": 1, "Code": 14, "Msg": "Invalid command"}], "id": 1}
            else:
                reply = {n: [_envelope(n)] for n in names} | {"id": 1}
            writer.write(_json.dumps(reply).encode() + b"\x00")
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_real_sockets_faults_typed_and_isolated(tmp_path: Path) -> None:
    pytest.importorskip("megawatch.agent.protocol.client")
    hows = ["ok"] * 20 + ["hang", "hang", "empty", "garbage", "huge", "no_join"]
    servers, ports = [], []
    for how in hows:
        server, port = await _serve_miner(how)
        servers.append(server)
        ports.append(port)
    refused = _free_port()
    entries = "".join(f"  - {{address: 127.0.0.1, port: {p}}}\n" for p in [*ports, refused])
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: t1\nminers:\n{entries}poll: {{interval_s: 5, request_timeout_s: 0.5, "
                    f"connect_timeout_s: 0.25, max_reply_bytes: 65536, jitter_s: 0}}\n")
    config = load_agent_config(path)
    state = FleetState("t1", len(config.miners))
    poller = Poller(config, state, dialects=DIALECTS, detect=_detect)  # the real client
    try:
        t0 = time.monotonic()
        snap = await poller.poll_once()
        elapsed = time.monotonic() - t0
    finally:
        for server in servers:
            server.close()
    # Two hung miners cost one deadline each, in parallel: the cycle is bounded by it, not by their count.
    assert elapsed < 0.5 + 0.6, elapsed
    polls = snap.counters.polls
    assert {k: v for k, v in polls.items() if v} == {
        "ok": 21, "timeout": 2, "empty": 1, "malformed": 1, "too_large": 1, "unreachable": 1}
    assert snap.totals.up == 21 and snap.totals.down == 6
    assert snap.totals.hashrate_hs == pytest.approx(21 * 50e12)
    no_join = next(m for m in snap.miners if m.target.port == ports[-1])
    assert no_join.status is MinerStatus.UP  # fell back to one command per connection


# ---- Against the simulator (tests/conftest.py sim fixtures): the issue's "shown by" checks ----

SIM_FAULTS = {"offline": "unreachable", "hang": "timeout", "garbage": "malformed", "oversize": "too_large",
              "empty": "empty"}


def _sim_agent_config(tmp_path: Path, sim: Any, **poll: Any) -> AgentConfig:
    settings = {"interval_s": 15, "request_timeout_s": 2, "connect_timeout_s": 1, "jitter_s": 0,
                "stale_grace_s": 40, "concurrency": 256, **poll}
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}}}\n" for m in sim.miners)
    lines = "".join(f"  {k}: {v}\n" for k, v in settings.items())
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: {sim.miners[0].site}\nminers:\n{entries}poll:\n{lines}")
    return load_agent_config(path)


@pytest.mark.slow
async def test_agent_matches_simulator_truth_with_5_percent_faults(tmp_path: Path, make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(sites=1, per_group=125)  # 8 reply profiles x 125 = 1,000 miners
    assert len(sim.miners) == 1000
    faulty = sim.miners[::20]  # 50 miners, 5%, spread over every dialect
    for i, kind in enumerate(SIM_FAULTS):
        sim.set_fault(faulty[i::len(SIM_FAULTS)], kind)
    config = _sim_agent_config(tmp_path, sim)
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state)  # real client, real dialects, real detection
    first = await poller.poll_once()  # detection + first reading
    t0 = time.monotonic()
    snap = await poller.poll_once()
    elapsed = time.monotonic() - t0
    truth = (await sim.truth())["sites"][config.site]

    # A hung miner costs one deadline (2 s) for its whole poll, not one per command or per retry (that would
    # be 4 s and more); anything under two deadlines is event-loop lag (this loop also runs the 1,000
    # simulated miners, on a shared machine). Ten hung miners in a row would be 20 s.
    hung = [m for m in snap.miners if m.last_error is ErrorKind.TIMEOUT]
    assert hung and all(2.0 <= (m.poll_duration_s or 0) < 4.0 for m in hung), [m.poll_duration_s for m in hung]
    assert elapsed < 10, elapsed
    t = snap.totals
    assert (t.up, t.down, t.stale) == (950, 50, 0)
    assert t.hashrate_hs == pytest.approx(truth["hashrate_hs"], rel=0.01)
    assert t.power_firmware_w == pytest.approx(truth["power_w_reported"], rel=0.01)
    assert t.power_estimate_w == pytest.approx(truth["power_w_estimable"], rel=0.01)
    # Cycle 2 alone: one failure skips no cycle yet, so every faulty miner is polled again.
    second = {k: snap.counters.polls[k] - v for k, v in first.counters.polls.items()}
    assert {k: second[k] for k in SIM_FAULTS.values()} == dict.fromkeys(SIM_FAULTS.values(), 10)
    assert second["ok"] == 950
    by_kind = Counter(m.last_error.value for m in snap.miners if m.last_error is not None)
    assert by_kind == Counter(dict.fromkeys(SIM_FAULTS.values(), 10))


@pytest.mark.parametrize("joins", [True, False], ids=["joins", "refuses-joins"])
async def test_bmminer_read_in_full_whether_or_not_it_joins(tmp_path: Path, make_sim_fleet: Any, joins: bool) -> None:
    """bmminer asks for a join; a stock S19 that refuses it is still read in full, one command per
    connection, and the refusal is remembered: one refused join per miner, not one per cycle."""
    from megawatch.agent.dialects import bmminer
    from megawatch.agent.modeltable import estimate_power
    from megawatch.agent.protocol import client

    sim = await make_sim_fleet(sites=1, per_group=2, groups=(("bmminer", "Antminer S19 Pro"),), joins=joins)
    config = _sim_agent_config(tmp_path, sim)
    calls: list[tuple[str, tuple[str, ...]]] = []

    async def recording_query(host: str, commands: tuple[str, ...], **kwargs: Any) -> Any:
        calls.append((f"{host}:{kwargs['port']}", commands))
        return await client.query(host, commands, **kwargs)

    poller = Poller(config, FleetState(config.site, len(config.miners)), query=recording_query)
    for _ in range(3):
        snap = await poller.poll_once()
    joined = Counter(name for name, commands in calls if len(commands) > 1)
    for m in snap.miners:
        assert m.status is MinerStatus.UP and m.dialect == "bmminer"
        # The same replies asked one at a time (the simulator's clock is frozen) give the same reading.
        host, _, port = m.name.rpartition(":")
        replies = {c: (await client.query(host, (c,), port=int(port))).replies[c] for c in bmminer.COMMANDS}
        assert m.reading == estimate_power(bmminer.parse(replies), config.models)
        assert m.reading is not None and m.reading.boards and m.reading.fans and m.reading.pools
        if joins:  # detection, then one join per cycle
            assert joined[m.name] == 4 and len([c for c in calls if c[0] == m.name]) == 4
        else:  # one refused join (at detection), then one connection per command
            assert joined[m.name] == 1
            assert len([c for c in calls if c[0] == m.name]) == 1 + 2 + 3 * len(bmminer.COMMANDS)


async def test_offline_miner_turns_stale_then_unknown_never_zero(tmp_path: Path, make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(sites=1)
    config = _sim_agent_config(tmp_path, sim, stale_grace_s=40)
    clock = FakeClock()  # real sockets; the injected clock only stamps readings and ages
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state, clock=clock)
    before = await poller.poll_once()
    assert before.totals.up == len(sim.miners)
    victim = next(m for m in before.miners if m.power_w is not None)
    sim.set_fault([next(m for m in sim.miners if f"{m.host}:{m.port}" == victim.name)], "offline")
    seen = []
    for _ in range(3):
        clock.advance(15)
        snap = await poller.poll_once()
        m = next(x for x in snap.miners if x.name == victim.name)
        seen.append((m.status, m.stale_age_s, m.power_w))
        assert m.power_w != 0
    assert [s[0] for s in seen] == [MinerStatus.STALE, MinerStatus.STALE, MinerStatus.DOWN]
    assert seen[0][1] == 15 and seen[1][1] == 30 and seen[2][2] is None
    assert snap.totals.power_unknown_miners == 1 + before.totals.power_unknown_miners


async def test_run_keeps_the_interval_with_jitter_and_never_overlaps(tmp_path: Path, fleet: FakeFleet) -> None:
    import random

    config = _config(tmp_path, 2, interval_s=15, jitter_s=1, concurrency=1)
    state = FleetState(config.site, 2)
    starts: list[float] = []
    ends: list[float] = []
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        fleet.clock.advance(seconds)
        await asyncio.sleep(0)

    poller = Poller(config, state, query=fleet.query, deadlines=object(), clock=fleet.clock, dialects=DIALECTS,
                    detect=_detect, rng=random.Random(1), sleep=fake_sleep)
    base = fleet.clock.monotonic()
    task = asyncio.create_task(poller.run())
    try:
        for cycle in range(1, 6):
            if cycle == 3:
                fleet.reply_s = 10.0  # cycle 3: 2 miners x 1 call x 10 s, serial = 20 s > 15 s
            elif cycle == 4:
                fleet.reply_s = 0.01
            async with asyncio.timeout(5):
                snap = await state.wait_for_cycle(cycle)
            assert snap.started_s is not None and snap.duration_s is not None
            starts.append(snap.started_s - base)
            ends.append(snap.started_s + snap.duration_s - base)
            # Each cycle is published before the next starts: no overlap.
            assert snap.started_s + snap.duration_s <= fleet.clock.time()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # On schedule, each up to 1 s late (jitter)...
    for k in (0, 1, 2):
        assert 15 * k <= starts[k] < 15 * k + 1
    # ...cycle 3 overran (20 s from ~30 s): cycle 4 starts when it ends (plus jitter), then the interval resumes.
    assert ends[2] - starts[2] > 15
    assert ends[2] <= starts[3] < ends[2] + 1
    assert starts[3] + 15 <= starts[4] < starts[3] + 16
    assert snap.counters.overruns == 1


async def test_a_bug_costs_one_miners_poll_not_the_cycle(tmp_path: Path, fleet: FakeFleet) -> None:
    def broken_parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
        raise KeyError("SUMMARY")

    config = _config(tmp_path, 3)
    state = FleetState(config.site, 3)
    original = fleet.query

    async def query(host: str, commands: tuple[str, ...], **kw: Any) -> Result:
        if host == "127.9.0.3":
            raise RuntimeError("client bug")
        return await original(host, commands, **kw)

    fleet.dialect["127.9.0.2"] = "broken"
    dialects = {**DIALECTS, "broken": SimpleNamespace(COMMANDS=("summary",), JOINABLE=False, parse=broken_parse)}
    poller = Poller(config, state, query=query, deadlines=object(), clock=fleet.clock, dialects=dialects,
                    detect=_detect)
    with capture_logs() as logs:
        await poller.poll_once()
        snap = await poller.poll_once()
    assert [m.status for m in snap.miners] == [MinerStatus.UP, MinerStatus.DOWN, MinerStatus.DOWN]
    assert snap.counters.polls["malformed"] == 4
    errors = sorted((e["event"], e["miner"]) for e in logs if e["log_level"] == "error")
    assert errors == [("parse_failed", "127.9.0.2:4028"), ("poll_crashed", "127.9.0.3:4028")]


async def test_redetects_after_repeated_failures(tmp_path: Path, fleet: FakeFleet) -> None:
    config = _config(tmp_path, 1, redetect_after_failures=3)
    poller, _ = _poller(config, fleet)
    await poller.poll_once()
    fleet.behaviour["127.9.0.1"] = "garbage"  # e.g. reflashed: the old dialect's commands fail
    for _ in range(3):
        await poller.poll_once()
    fleet.behaviour["127.9.0.1"] = "ok"
    fleet.dialect["127.9.0.1"] = "other"
    fleet.calls.clear()
    snap = await poller.poll_once()
    assert fleet.calls[0] == ("127.9.0.1", ("version", "devdetails"))  # detection first
    assert snap.miners[0].dialect == "other" and snap.miners[0].status is MinerStatus.UP
