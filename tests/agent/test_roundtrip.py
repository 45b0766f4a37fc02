"""The real client (agent.protocol.client) against the real simulator, over loopback sockets.

Every dialect's poll commands come back parsed; every simulated fault surfaces as its typed MinerError
within the deadline, and the miner next to it still answers.
"""

from __future__ import annotations

import json
import time

import pytest

from megawatch.agent.dialects import DIALECTS
from megawatch.agent.protocol.client import Deadlines, query
from megawatch.agent.protocol.errors import (
    BadReply,
    CommandRejected,
    ConnectFailed,
    EmptyReply,
    ErrorKind,
    PollTimeout,
    PrivilegedCommandRefused,
    ReplyTooLarge,
)
from tests.conftest import DEFAULT_GROUPS

DEADLINES = Deadlines(connect_s=1.0, request_s=0.6)
CAP = 1 << 20


@pytest.mark.parametrize(("dialect", "model"), DEFAULT_GROUPS, ids=[f"{d}-{m.split()[-1]}" for d, m in DEFAULT_GROUPS])
async def test_every_dialect_answers_its_poll_commands(make_sim_fleet, dialect, model):
    fleet = await make_sim_fleet(groups=((dialect, model),), sites=1)
    m = fleet.miners[0]
    module = DIALECTS[dialect]
    result = await query(m.host, module.COMMANDS, port=m.port, deadlines=DEADLINES, max_reply_bytes=CAP)
    assert set(result.replies) == set(module.COMMANDS) and not result.rejected
    for name, reply in result.replies.items():
        assert reply["STATUS"][0]["STATUS"] == "S", (name, reply["STATUS"])
    for command in module.COMMANDS:  # one command per connection too (the poller's fallback)
        single = await query(m.host, [command], port=m.port, deadlines=DEADLINES, max_reply_bytes=CAP)
        assert single.replies[command]["STATUS"][0]["STATUS"] == "S"
    assert module.parse(result.replies).hashrate_hs is not None


FAULTS = [
    # (fault, parameters, the error the client must raise)
    ("offline", {}, ConnectFailed),
    ("reboot", {"duration_s": 30.0}, ConnectFailed),
    ("hang", {}, PollTimeout),
    ("slow", {"delay_s": 5.0}, PollTimeout),
    ("drip", {"interval_ms": 50.0}, PollTimeout),
    ("malformed", {}, BadReply),
    ("truncated", {}, BadReply),
    ("reset", {}, BadReply),
    ("garbage", {}, BadReply),
    ("oversize", {"size_bytes": 2 * 1024 * 1024}, ReplyTooLarge),
    ("empty", {}, EmptyReply),
]


@pytest.mark.parametrize(("fault", "params", "error"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_is_its_typed_failure_within_the_deadline(make_sim_fleet, fault, params, error):
    fleet = await make_sim_fleet(groups=(("bmminer", "Antminer S19 Pro"),), sites=1, per_group=2)
    faulty, neighbour = fleet.miners
    fleet.set_fault([faulty], fault, **params)
    commands = DIALECTS["bmminer"].COMMANDS
    started = time.monotonic()
    with pytest.raises(error) as caught:
        await query(faulty.host, commands, port=faulty.port, deadlines=DEADLINES, max_reply_bytes=CAP)
    assert time.monotonic() - started < DEADLINES.request_s + 0.5
    if error is PollTimeout:
        assert caught.value.phase == "reply"
    result = await query(neighbour.host, commands, port=neighbour.port, deadlines=DEADLINES, max_reply_bytes=CAP)
    assert set(result.replies) == set(commands)


async def test_slow_within_the_deadline_still_answers(make_sim_fleet):
    fleet = await make_sim_fleet(groups=(("btminer", "Whatsminer M30S++"),), sites=1)
    m = fleet.miners[0]
    fleet.set_fault([m], "slow", delay_s=0.2)
    result = await query(m.host, ["summary"], port=m.port, deadlines=DEADLINES)
    assert result.replies["summary"]["SUMMARY"][0]["Power"] > 0


async def test_rejections_are_typed_and_nothing_privileged_is_sent(make_sim_fleet):
    fleet = await make_sim_fleet(groups=(("bmminer", "Antminer S19 Pro"),), sites=1)
    m = fleet.miners[0]
    with pytest.raises(CommandRejected) as caught:
        await query(m.host, ["devdetails"], port=m.port, deadlines=DEADLINES)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.API_ERROR, 45)
    joined = await query(m.host, ["summary", "devdetails"], port=m.port, deadlines=DEADLINES)
    assert set(joined.replies) == {"summary"} and joined.rejected["devdetails"].code == 45
    with pytest.raises(PrivilegedCommandRefused):
        await query(m.host, ["restart"], port=m.port, deadlines=DEADLINES)
    assert fleet.miner(m.index).privileged == 0  # refused before a byte went out


async def test_a_join_refusing_miner_is_a_typed_rejection_then_single_commands_work(make_sim_fleet):
    fleet = await make_sim_fleet(groups=(("bmminer", "Antminer S19 Pro"),), sites=1, joins=False)
    m = fleet.miners[0]
    commands = DIALECTS["bmminer"].COMMANDS
    with pytest.raises(CommandRejected) as caught:
        await query(m.host, commands, port=m.port, deadlines=DEADLINES)
    assert caught.value.code == 14
    replies = {}
    for command in commands:
        replies.update((await query(m.host, [command], port=m.port, deadlines=DEADLINES)).replies)
    assert DIALECTS["bmminer"].parse(replies).hashrate_hs is not None


@pytest.mark.parametrize(("dialect", "model"), DEFAULT_GROUPS, ids=[f"{d}-{m.split()[-1]}" for d, m in DEFAULT_GROUPS])
async def test_quirky_replies_are_repaired_to_the_same_reading(make_sim_fleet, raw_request, dialect, model):
    fleet = await make_sim_fleet(groups=((dialect, model),), sites=1)
    m = fleet.miners[0]
    module = DIALECTS[dialect]
    clean = module.parse((await query(m.host, module.COMMANDS, port=m.port, deadlines=DEADLINES)).replies)
    fleet.set_fault([m], "quirky")
    raw = await raw_request(m.host, m.port, json.dumps({"command": "+".join(module.COMMANDS)}).encode())
    with pytest.raises(ValueError):
        json.loads(raw[:-1])  # really broken on the wire: `}{`, `,}`, `\'`
    repaired = module.parse((await query(m.host, module.COMMANDS, port=m.port, deadlines=DEADLINES)).replies)
    assert repaired == clean
    assert (await fleet.truth())["fleet"]["miners_serving"] == 1  # a tolerant client reads it
