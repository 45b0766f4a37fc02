"""Inventory: identity per firmware from real reply shapes, one event per change, a bounded state file written
atomically and read back (a bad one set aside), and /api/v1/inventory as JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from megawatch.agent.config import load_agent_config
from megawatch.agent.inventory import Inventory, UnitIdentity, identity_of, to_csv
from megawatch.agent.model import Board, MinerReading
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.poller import Poller
from megawatch.agent.protocol.framing import decode_reply
from megawatch.agent.state import FleetState
from megawatch.agent.web import POLLER, make_app

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "replies"
MODELS = load_model_table()


def _golden(path: str) -> dict[str, object]:
    return decode_reply((GOLDEN / path).read_bytes())


def test_identity_from_real_replies() -> None:
    summary = _golden("btminer/whatsminer-m20s-20200917.22/summary.bin")
    reading = MinerReading(dialect="btminer", model="M20S", boards=(Board(0), Board(1), Board(2)))
    ident = identity_of("btminer", {"summary": summary}, reading, MODELS)  # type: ignore[dict-item]
    assert (ident.make, ident.model, ident.mac, ident.hashboards) == \
        ("MicroBT", "Whatsminer M20S", "C4:11:04:01:3C:75", 3)
    assert ident.nameplate_hs == 67051e9  # the unit's own Factory GHS, not the model's
    version = _golden("avalon/24102401_25462b2_9ddf522/version.bin")
    ident = identity_of("avalon", {"version": version}, None, MODELS)  # type: ignore[dict-item]
    assert (ident.mac, ident.hardware_id, ident.unit) == \
        ("12:34:56:78:90:12", "020100008c699117", "mac:12:34:56:78:90:12")
    stats = _golden("bmminer/antminer-s19-bmminer-1.0.0/stats.bin")
    ident = identity_of("bmminer", {"stats": stats}, MinerReading(dialect="bmminer", model="Antminer S19"), MODELS)  # type: ignore[dict-item]
    assert (ident.hardware_id, ident.nameplate_hs, ident.make) == ("803c2c867510481c", 63919e9, "Bitmain")
    # A Whatsminer native reply and a LuxOS config, as those firmwares shape them.
    native = {"STATUS": "S", "Code": 131, "Msg": {"mac": "c4-11-04-01-3c-76", "hostname": "rack4-07",
                                                  "minersn": "HEM20S66A20110817H56"}}
    ident = identity_of("btminer", {"get_miner_info": native}, None, MODELS)
    assert (ident.serial, ident.mac, ident.hostname) == ("HEM20S66A20110817H56", "C4:11:04:01:3C:76", "rack4-07")
    config = {"CONFIG": [{"SerialNumber": "JYZZF4BBCJDBF04YL", "MACAddr": "02:11:22:33:44:55", "Hostname": "lux"}]}
    ident = identity_of("luxos", {"config": config}, None, MODELS)
    assert (ident.serial, ident.mac, ident.hostname, ident.unit) == ("JYZZF4BBCJDBF04YL", "02:11:22:33:44:55", "lux",
                                                                     "serial:JYZZF4BBCJDBF04YL")
    # Nonsense is unknown, never a crash.
    ident = identity_of("luxos", {"config": {"CONFIG": [{"MACAddr": "not a mac", "SerialNumber": ["x"]}]}}, None, None)
    assert (ident.mac, ident.serial) == (None, None)


def test_one_event_per_change(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "inv.json", "s1", models=MODELS)
    a = UnitIdentity(dialect="luxos", model="Antminer S21", firmware_version="2025.4.8", serial="S1",
                     mac="02:00:00:00:00:01")
    with capture_logs() as logs:
        inv.observe("m1", a, 100.0)
        inv.observe("m1", UnitIdentity(model="Antminer S21", firmware_version="2025.4.8"), 110.0)  # a poll: no change
        inv.observe("m1", UnitIdentity(firmware_version="2025.5.1"), 120.0)
        inv.observe("m1", UnitIdentity(firmware_version="2025.5.1", serial="S2"), 130.0)  # another unit
        inv.observe("m1", UnitIdentity(serial="S2", mac="02:00:00:00:00:02"), 140.0)  # its MAC learnt: no event
        inv.observe("m2", a, 150.0, announce=False)  # a listed miner's first answer is expected
        inv.vanish("m1", 200.0)
        inv.vanish("m1", 210.0)
        inv.observe("m1", UnitIdentity(serial="S2"), 220.0)
    assert [e["event"] for e in logs] == ["miner_appeared", "miner_firmware_changed", "miner_swapped", "miner_vanished",
                                          "miner_appeared"]
    swapped = logs[2]
    assert (swapped["previous_serial"], swapped["serial"]) == ("S1", "S2")
    assert inv.entries["m1"].identity.mac == "02:00:00:00:00:02" and inv.entries["m1"].identity.model is None


def test_state_file_round_trip_bounded_and_a_bad_file_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    inv = Inventory(path, "s1", max_entries=3)
    for i in range(3):
        inv.observe(f"m{i}", UnitIdentity(serial=f"S{i}"), float(i))
    inv.vanish("m0", 10.0)
    inv.observe("m3", UnitIdentity(serial="S3"), 11.0)  # over the bound: the longest-gone entry goes
    inv.save()
    assert sorted(inv.entries) == ["m1", "m2", "m3"] and not list(tmp_path.glob("*.tmp"))
    back = Inventory(path, "s1")
    back.load()
    assert back.rows() == inv.rows()
    path.write_text('{"version": 1, "miners": [{"miner": "x"}]}')
    broken = Inventory(path, "s1")
    with capture_logs() as logs:
        broken.load()
    assert broken.entries == {} and logs[0]["event"] == "inventory_unreadable"
    assert (tmp_path / "inv.json.bad").exists() and not path.exists()


def test_csv_cells_cannot_become_formulas() -> None:
    text = to_csv([{"miner": "m1", "hostname": "=HYPERLINK(\"x\")", "present": True}])
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["hostname"].startswith("'=") and row["present"] == "True"


async def test_inventory_endpoint_json_and_csv(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: s1\nminers:\n  - address: 127.0.0.1\n    port: 9\n")
    config = load_agent_config(path)
    state = FleetState(config.site, 1)
    poller = Poller(config, state)
    poller.inventory.observe("127.0.0.1:9", UnitIdentity(dialect="btminer", model="Whatsminer M30S", serial="HEM1",
                                                         mac="C4:11:04:01:3C:75"), 5.0)
    app = make_app(config, state, CollectorRegistry())
    app[POLLER] = poller  # as make_app(poller=...) does, without starting its loop
    async with TestClient(TestServer(app)) as client:
        doc = await (await client.get("/api/v1/inventory")).json()
        assert doc["count"] == 1 and doc["miners"][0]["serial"] == "HEM1" and doc["miners"][0]["unit"] == "serial:HEM1"
        response = await client.get("/api/v1/inventory?format=csv")
        assert response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
        assert rows[0]["mac"] == "C4:11:04:01:3C:75" and rows[0]["miner"] == "127.0.0.1:9"
        assert (await client.get("/api/v1/inventory?format=xml")).status == 400
    assert json.dumps(doc)
