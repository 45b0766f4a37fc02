"""The simulator obeys each firmware's stop/resume write commands with its replies and access rules; the
ground truth follows (a stopped miner draws its idle power) and every write is counted."""

from __future__ import annotations

import json

from megawatch.simulator.power import wall_power_w

GROUPS = (("cgminer", "Antminer S19"), ("bfgminer", "Antminer S9"), ("bosminer", "Antminer S19j Pro"),
          ("luxos", "Antminer S19 XP"), ("avalon", "Avalon A1366"))


def body(raw: bytes) -> dict:
    assert raw.endswith(b"\0")
    return json.loads(raw[:-1])


def status(raw: bytes) -> tuple[str, int, str]:
    s = body(raw)["STATUS"][0]
    return s["STATUS"], s["Code"], s["Msg"]


async def send(raw_request, m, command: str, parameter: str | None = None) -> bytes:
    req = {"command": command} if parameter is None else {"command": command, "parameter": parameter}
    return await raw_request(m.host, m.port, json.dumps(req).encode())


async def row_of(fleet, m) -> dict:
    return next(r for r in fleet.fleet.miner_rows() if r["index"] == m.index)


async def test_cgminer_disable_needs_the_write_group(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=GROUPS[:1], sites=1, allow_control=False)
    m = fleet.miners[0]
    assert status(await send(raw_request, m, "ascdisable", "0")) == ("E", 45, "Access denied to 'ascdisable' command")
    assert (await row_of(fleet, m))["stopped"] == 0
    assert (await fleet.truth())["sites"][m.site]["privileged_commands"] == 1


async def test_cgminer_and_bfgminer_devices_stop_and_restart(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=GROUPS[:2], sites=1, allow_control=True)
    cg, bfg = fleet.miners
    before = (await row_of(fleet, cg))["true_power_w"]
    assert status(await send(raw_request, cg, "ascdisable", "0")) == ("I", 111, "ASC 0 set disable flag")
    assert status(await send(raw_request, cg, "ascdisable", "0")) == ("I", 109, "ASC 0 already disabled")
    assert status(await send(raw_request, cg, "ascdisable", "7"))[:2] == ("E", 107)
    assert status(await send(raw_request, cg, "ascdisable"))[:2] == ("E", 15)
    for device in (1, 2):
        await send(raw_request, cg, "ascdisable", str(device))
    row = await row_of(fleet, cg)
    assert row["stopped"] == 1.0
    summary = body(await send(raw_request, cg, "summary"))["SUMMARY"][0]
    assert summary["MHS 5s"] == 0
    idle = wall_power_w(fleet.miner(cg.index).identity.power, 1.0, 20.0, 0.0, False, 1.0)
    assert row["true_power_w"] < before * 0.1 and abs(row["true_power_w"] - idle) < idle * 0.5
    assert status(await send(raw_request, cg, "ascenable", "0")) == ("I", 110, "ASC 0 sent enable message")
    assert status(await send(raw_request, cg, "ascenable", "0")) == ("I", 108, "ASC 0 already enabled")
    assert status(await send(raw_request, bfg, "pgadisable", "0")) == ("I", 64, "PGA 0 set disable flag")
    assert status(await send(raw_request, bfg, "pgaenable", "0")) == ("I", 63, "PGA 0 sent enable message")


async def test_braiins_pause_and_avalon_softoff_need_no_access(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=(GROUPS[2], GROUPS[4]), sites=1, allow_control=False)
    bos, avalon = fleet.miners
    assert status(await send(raw_request, bos, "pause"))[0] == "S"
    assert status(await send(raw_request, avalon, "ascset", "0,softoff,1:1700000000")) == ("S", 119, "ASC 0 set OK")
    truth = (await fleet.truth())["sites"][bos.site]
    assert truth["hashrate_hs"] == 0 and truth["privileged_commands"] == 2
    assert status(await send(raw_request, avalon, "ascset", "0,worklevel,set,2"))[:2] == ("E", 120)
    await send(raw_request, bos, "resume")
    await send(raw_request, avalon, "ascset", "0,softon,1:1700000000")
    assert (await fleet.truth())["sites"][bos.site]["hashrate_hs"] > 0


async def test_luxos_curtail_needs_its_one_session(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=(GROUPS[3],), sites=1)
    m = fleet.miners[0]
    assert status(await send(raw_request, m, "curtail", "nosuch,sleep"))[0] == "E"
    logon = body(await send(raw_request, m, "logon"))
    assert logon["STATUS"][0]["Code"] == 316
    sid = logon["SESSION"][0]["SessionID"]
    assert status(await send(raw_request, m, "logon"))[:2] == ("E", 402)
    reply = body(await send(raw_request, m, "curtail", f"{sid},sleep"))
    assert reply["STATUS"][0]["Code"] == 335 and reply["CURTAIL"][0]["Action"] == "sleep mode"
    assert (await row_of(fleet, m))["stopped"] == 1.0
    assert status(await send(raw_request, m, "logoff", sid))[0] == "S"
    assert status(await send(raw_request, m, "curtail", f"{sid},wakeup"))[0] == "E"  # the session is over


async def test_a_reboot_clears_cgminers_disable_flags_but_not_a_braiins_pause(make_sim_fleet, raw_request):
    import asyncio

    fleet = await make_sim_fleet(groups=(GROUPS[0], GROUPS[2]), sites=1, allow_control=True)
    cg, bos = fleet.miners
    for device in range(3):
        await send(raw_request, cg, "ascdisable", str(device))
    await send(raw_request, bos, "pause")
    for m in (cg, bos):
        fleet.fleet.reboot_miner(fleet.miner(m.index), 0.05)
    for _ in range(100):  # back within a second
        if all(fleet.miner(m.index).listening and not fleet.miner(m.index).rebooting for m in (cg, bos)):
            break
        await asyncio.sleep(0.02)
    rows = {r["index"]: r for r in fleet.fleet.miner_rows()}
    assert rows[cg.index]["stopped"] == 0.0 and rows[bos.index]["stopped"] == 1.0
