"""Simulator wire protocol: what a client sees on the socket, per cgminer's api() (docs/protocol.md)."""

from __future__ import annotations

import json

import pytest

from megawatch.agent.dialects import DETECT_COMMANDS, DIALECTS


def body_of(raw: bytes) -> dict:
    assert raw.endswith(b"\0") and raw.count(b"\0") == 1, raw[-40:]
    return json.loads(raw[:-1])


async def test_every_reply_ends_with_one_nul_and_the_miner_closes(sim_fleet, raw_request):
    for m in sim_fleet.miners:
        raw = await raw_request(m.host, m.port, b'{"command":"summary"}')
        reply = body_of(raw)
        assert reply["STATUS"][0]["STATUS"] == "S", (m.dialect, reply)
        assert reply["id"] == 1


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_each_dialect_answers_its_commands_and_detection(sim_fleet, raw_request, dialect):
    module = DIALECTS[dialect]
    for m in sim_fleet.of_dialect(dialect):
        for command in (*module.COMMANDS, *DETECT_COMMANDS):
            reply = body_of(await raw_request(m.host, m.port, json.dumps({"command": command}).encode()))
            status = reply["STATUS"][0]
            if dialect == "bmminer" and command == "devdetails":
                # Stock Antminer api-groups allow only stats, pools, devs, summary, version.
                assert (status["STATUS"], status["Code"]) == ("E", 45)
                assert status["Msg"] == "Access denied to 'devdetails' command"
            else:
                assert status["STATUS"] == "S", (m.model, command, status)
                data = [key for key in reply if key not in ("STATUS", "id")]
                assert len(data) == 1 and reply[data[0]], (m.model, command, reply)


async def test_join_has_the_real_shape_with_per_section_errors(sim_fleet, raw_request):
    m = sim_fleet.of_dialect("cgminer")[0]
    raw = await raw_request(m.host, m.port, b'{"command":"summary+devs+summary++nosuch+restart"}')
    reply = body_of(raw)
    assert list(reply) == ["summary", "devs", "nosuch", "restart", "id"]
    assert reply["id"] == 1
    for name in ("summary", "devs"):
        assert isinstance(reply[name], list) and len(reply[name]) == 1
        assert reply[name][0]["STATUS"][0]["STATUS"] == "S" and reply[name][0]["id"] == 1
    unknown = reply["nosuch"][0]["STATUS"][0]
    assert (unknown["Code"], unknown["Msg"]) == (14, "Invalid command")
    assert "Description" not in unknown  # cgminer >= 2018 hides it from probes
    denied = reply["restart"][0]["STATUS"][0]
    assert (denied["Code"], denied["Msg"]) == (45, "Access denied to 'restart' command")
    assert raw.startswith(b'{"summary":[{"STATUS":[{"STATUS":"S","When":')


@pytest.mark.parametrize(("payload", "code", "msg"), [
    (b'{"command":', 23, "Invalid JSON"),
    (b'{"cmd":"summary"}', 24, "Missing JSON 'command'"),
    (b'{"command":"nosuch"}', 14, "Invalid command"),
    (b'{"command":42}', 14, "Invalid command"),
    (b'{"command":"Summary"}', 14, "Invalid command"),  # case-sensitive
])
async def test_request_errors(sim_fleet, raw_request, payload, code, msg):
    m = sim_fleet.of_dialect("cgminer")[0]
    status = body_of(await raw_request(m.host, m.port, payload))["STATUS"][0]
    assert (status["STATUS"], status["Code"], status["Msg"]) == ("E", code, msg)


async def test_json_with_trailing_newline_is_accepted(sim_fleet, raw_request):
    m = sim_fleet.of_dialect("cgminer")[0]
    reply = body_of(await raw_request(m.host, m.port, b'{"command":"version"}\n'))
    assert reply["VERSION"][0]["CGMiner"] == "4.11.1"


async def test_legacy_text_form_and_untrimmed_newline(sim_fleet, raw_request):
    m = sim_fleet.of_dialect("cgminer")[0]
    raw = await raw_request(m.host, m.port, b"summary")
    assert raw.endswith(b"|\0") and raw.count(b"\0") == 1
    text = raw[:-1].decode()
    status, summary = text.split("|")[:2]
    assert status.startswith("STATUS=S,When=") and "Code=11,Msg=Summary,Description=cgminer 4.11.1" in status
    assert summary.startswith("SUMMARY,Elapsed=") and ",MHS 5s=" in summary
    # `echo summary | nc` sends the newline too: cgminer does not trim it (a hexdump in BFGMiner's tracker shows it).
    bad = (await raw_request(m.host, m.port, b"summary\n"))[:-1].decode()
    assert bad.startswith("STATUS=E,") and "Code=14,Msg=Invalid command" in bad


async def test_privileged_commands_are_refused_and_counted(sim_fleet, raw_request):
    m, neighbour = sim_fleet.of_dialect("cgminer")[0], sim_fleet.of_dialect("bfgminer")[0]
    for payload in (b'{"command":"restart"}', b'{"command":"addpool","parameter":"a,b,c"}', b"switchpool|1",
                    b'{"command":"summary+ascset"}'):
        raw = await raw_request(m.host, m.port, payload)
        assert b"Access denied to '" in raw, raw
    assert sim_fleet.miner(m.index).privileged == 4
    assert sim_fleet.miner(m.index).listening  # a refused restart does not restart
    truth = await sim_fleet.truth()
    assert truth["sites"][m.site]["privileged_commands"] == 4
    assert truth["fleet"]["privileged_commands"] == 4
    assert sim_fleet.miner(neighbour.index).privileged == 0


async def test_control_allowed_miner_obeys_restart(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=(("cgminer", "Antminer S19"),), sites=1, allow_control=True)
    m = fleet.miners[0]
    raw = await raw_request(m.host, m.port, b'{"command":"switchpool","parameter":1}')
    assert body_of(raw)["STATUS"][0]["Code"] == 27
    raw = await raw_request(m.host, m.port, b'{"command":"restart"}')
    assert raw == b'{"STATUS":"RESTART","id":1}\0'
    assert fleet.miner(m.index).privileged == 2
    # Like the firmware, it goes down after answering: the port refuses while it restarts.
    with pytest.raises(ConnectionRefusedError):
        await raw_request(m.host, m.port, b'{"command":"summary"}')


async def test_legacy_text_join_and_privileged(sim_fleet, raw_request):
    m = sim_fleet.of_dialect("cgminer")[0]
    text = (await raw_request(m.host, m.port, b"version+restart"))[:-1].decode()
    version, restart = text.split("CMD=")[1:]
    assert version.startswith("version|STATUS=S,") and "|VERSION,CGMiner=4.11.1,API=3.7|" in version
    assert restart.startswith("restart|STATUS=E,") and "Code=45,Msg=Access denied to 'restart' command" in restart
    assert sim_fleet.miner(m.index).privileged == 1


async def test_a_miner_configured_without_joins_refuses_them(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=(("bmminer", "Antminer S19 Pro"),), sites=1, joins=False)
    m = fleet.miners[0]
    status = body_of(await raw_request(m.host, m.port, b'{"command":"summary+pools"}'))["STATUS"][0]
    assert (status["STATUS"], status["Code"]) == ("E", 14)
    assert body_of(await raw_request(m.host, m.port, b'{"command":"pools"}'))["STATUS"][0]["STATUS"] == "S"


async def test_only_the_first_4095_request_bytes_count(sim_fleet, raw_request):
    m = sim_fleet.of_dialect("cgminer")[0]
    padded = b'{"command":"summary","parameter":"' + b"x" * 5000 + b'"}'
    status = body_of(await raw_request(m.host, m.port, padded))["STATUS"][0]
    assert (status["Code"], status["Msg"]) == (23, "Invalid JSON")  # cut mid-string, as cgminer's recv() does


async def test_a_silent_client_is_let_go(sim_fleet, monkeypatch):
    import asyncio

    from megawatch.simulator import miner as miner_module

    monkeypatch.setattr(miner_module, "IDLE_CLOSE_S", 0.2)
    m = sim_fleet.of_dialect("cgminer")[0]
    reader, writer = await asyncio.open_connection(m.host, m.port)
    async with asyncio.timeout(2):
        assert await reader.read() == b""  # closed by the miner without a byte
    writer.close()


def test_reply_cache_refreshes_when_and_nothing_else():
    from megawatch.simulator.cache import ReplyCache

    cache = ReplyCache(limit=2)
    key = (1, b'{"command":"summary"}', 0, 0)
    body = b'{"STATUS":[{"STATUS":"S","When":1700000000,"Code":11}],"SUMMARY":[{"Total MH":17000000001}],"id":1}\0'
    cache.put(key, body, 1700000000)
    assert cache.get(key, 1700000000) == body
    fresh = cache.get(key, 1700000004)
    assert fresh == body.replace(b'"When":1700000000,', b'"When":1700000004,')
    spaced = b'{"STATUS": [{"STATUS": "S", "When": 1700000000, "Code": 11}]}\0'
    cache.put((2, b"x", 0, 0), spaced, 1700000000)
    assert b'"When": 1700000009,' in cache.get((2, b"x", 0, 0), 1700000009)
    cache.put((3, b"y", 0, 0), b"STATUS=S,When=1700000000,Code=11|\0", 1700000000)
    assert cache.get(key, 1) is None  # the oldest entry made room
    assert cache.get((3, b"y", 0, 0), 1700000001) == b"STATUS=S,When=1700000001,Code=11|\0"


async def test_a_repeated_privileged_request_is_counted_every_time(sim_fleet, raw_request):
    m = sim_fleet.of_dialect("btminer")[0]
    for _ in range(3):
        await raw_request(m.host, m.port, b'{"command":"summary+restart"}')
    assert sim_fleet.miner(m.index).privileged == 3
    assert (await sim_fleet.truth())["fleet"]["privileged_commands"] == 3


async def test_port_base_puts_a_site_on_consecutive_ports(make_sim_fleet, raw_request):
    import os

    base = 41000 + (os.getpid() % 500) * 40
    fleet = await make_sim_fleet(groups=(("cgminer", "Antminer S19"),), sites=1, per_group=3, port_base=base)
    assert [(m.host, m.port) for m in fleet.miners] == [(fleet.miners[0].host, base + i) for i in range(3)]
    for m in fleet.miners:
        assert body_of(await raw_request(m.host, m.port, b'{"command":"version"}'))["STATUS"][0]["STATUS"] == "S"


async def test_a_fleet_that_cannot_bind_says_how_far_it_got(make_sim_fleet):
    import dataclasses

    from megawatch.simulator.fleet import Fleet, FleetStartError, plan_fleet

    fleet = await make_sim_fleet(groups=(("cgminer", "Antminer S19"),), sites=1, per_group=2)
    taken = fleet.fleet.config
    # The same two addresses, both on the port the second running miner holds: the second bind fails.
    clash = dataclasses.replace(taken.sites[0], port=fleet.miners[1].port)
    config = dataclasses.replace(taken, sites=(clash,))
    with pytest.raises(FleetStartError, match=r"bound 1 of 2 listeners; .*:\d+: .*in use"):
        await Fleet(config, plan_fleet(config)).start()


def test_text_renderers_give_the_same_bytes_as_the_reply_trees():
    # replies/fast.py renders the hottest sections straight to text; every byte must match the tree
    # renderer, over fresh boots (no shares yet), idle (load 0), faults, long uptimes and clock values.
    from megawatch.agent.modeltable import load_model_table
    from megawatch.simulator import replies
    from megawatch.simulator.behaviour import make_identity, snapshot
    from megawatch.simulator.faults import make_fault
    from megawatch.simulator.requests import NOT_JOINABLE

    table = load_model_table()
    from tests.conftest import DEFAULT_GROUPS

    profiles = DEFAULT_GROUPS  # every reply profile
    faults = [None, make_fault("overheat", {}), make_fault("hashrate_drop", {}), make_fault("power_surge", {})]
    compared = 0
    for dialect, model in profiles:
        for index in range(12):
            ident = make_identity(seed=3, index=index, host="127.0.0.1", port=4028, site="north-1", dialect=dialect,
                                  model=table.lookup(model), ambient_c=30.0, allow_control=False)
            fw = replies.firmware_for(ident)
            for name, render in fw.fast.items():
                assert name in fw.handlers and name not in NOT_JOINABLE and (fw.allowed is None or name in fw.allowed)
                for tick, load, boot_tick, fresh in ((0, 1.0, 0, False), (9, 1.0, 9, True), (10, 1.0, 9, True),
                                                      (5000, 0.0, 0, False), (123457, 1.3, 0, False)):
                    for fault in faults:
                        s = snapshot(ident, seed=3, tick=tick, tick_s=5.0, load=load, boot_tick=boot_tick,
                                     booted_fresh=fresh, fault=fault)
                        now = 1_700_000_000 + tick * 5
                        when = s.uptime_s if fw.when_is_uptime else now
                        tree = replies.as_object(fw, fw.handlers[name](ident, s, now), when)
                        assert render(ident, s, now, when, fw) == replies.encode_json(fw, tree), (dialect, name, tick)
                        compared += 1
    sections = {(dialect, model): len(replies.firmware_for(make_identity(
        seed=3, index=0, host="127.0.0.1", port=4028, site="x", dialect=dialect, model=table.lookup(model),
        ambient_c=30.0, allow_control=False)).fast) for dialect, model in profiles}
    assert all(sections.values()), sections
    assert compared == sum(sections.values()) * 12 * 5 * 4
