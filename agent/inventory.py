"""What each miner is, kept across restarts: identity from its replies, a bounded state file, one event per change.

A unit's identity is what its firmware reports about the hardware: a serial number, a MAC address, a hardware id
(Antminer `stats` miner_id, Avalon `version` DNA), else only its address and model. The agent remembers it per
miner (host:port) in `inventory.state_file`, written atomically, and logs one event per change:
`miner_appeared`, `miner_vanished`, `miner_swapped` (same address, another unit or model) and
`miner_firmware_changed`. Field names per firmware are the real ones (tests/golden/replies):
Whatsminer `get_miner_info` Msg.minersn/mac/hostname and `summary` MAC/Factory GHS; LuxOS `config`
SerialNumber/MACAddr/Hostname; Avalon `version` MAC/DNA; Antminer `stats` miner_id/total_rateideal.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from megawatch.agent.model import MinerReading
from megawatch.agent.modeltable import ModelTable
from megawatch.common.logs import get_logger

STATE_VERSION = 1
GH = 1e9
# Read-only commands that carry identity and are not in the dialect's own poll (sent by scans and rescans only).
IDENTITY_COMMANDS: Mapping[str, tuple[str, ...]] = {"btminer": ("get_miner_info",), "luxos": ("config",)}
# Whatsminer's native commands cannot join a cgminer-style `a+b` request.
UNJOINABLE = frozenset({"get_miner_info"})
_MAKES = (("antminer", "Bitmain"), ("whatsminer", "MicroBT"), ("avalon", "Canaan"))
EVENTS = ("miner_appeared", "miner_vanished", "miner_swapped", "miner_firmware_changed")


@dataclass(frozen=True, slots=True)
class UnitIdentity:
    """What a miner is. None is "not reported" (many firmwares never report a serial or MAC over the API)."""

    dialect: str | None = None
    make: str | None = None
    model: str | None = None
    firmware: str | None = None
    firmware_version: str | None = None
    serial: str | None = None
    mac: str | None = None
    hostname: str | None = None
    hardware_id: str | None = None
    hashboards: int | None = None
    nameplate_hs: float | None = None

    @property
    def unit(self) -> str | None:
        """The strongest unit identifier reported, prefixed by its kind; None: only address and model."""
        for kind, value in (("serial", self.serial), ("mac", self.mac), ("hardware_id", self.hardware_id)):
            if value:
                return f"{kind}:{value}"
        return None

    def merged(self, newer: UnitIdentity) -> UnitIdentity:
        """`newer` where it knows a field, this where it does not (a poll's reading carries no serial)."""
        return replace(self, **{f.name: v for f in fields(newer) if (v := getattr(newer, f.name)) is not None})


FIELDS = tuple(f.name for f in fields(UnitIdentity))


def _first(reply: Mapping[str, Any] | None, section: str) -> Mapping[str, Any]:
    items = reply.get(section) if isinstance(reply, Mapping) else None
    if isinstance(items, list) and items and isinstance(items[0], Mapping):
        return items[0]
    return {}


def _text(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip().strip("'")
        return text[:64] or None  # a label-sized string; firmware strings are short
    return None


def _mac(value: Any) -> str | None:
    """Upper case, colon separated: Avalon reports `123456789012`, the others `C4:11:04:01:3C:75`."""
    text = _text(value)
    if text is None:
        return None
    digits = "".join(c for c in text if c not in ":-").upper()
    if len(digits) != 12 or any(c not in "0123456789ABCDEF" for c in digits):
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == number and number != float("inf") else None


def _stats_value(reply: Mapping[str, Any] | None, key: str) -> Any:
    items = reply.get("STATS") if isinstance(reply, Mapping) else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and key in item:
            return item[key]
    return None


def make_of(model: str | None) -> str | None:
    lowered = (model or "").lower()
    return next((make for word, make in _MAKES if word in lowered), None)


def identity_of(dialect: str, replies: Mapping[str, Mapping[str, Any]], reading: MinerReading | None,
                models: ModelTable | None) -> UnitIdentity:
    """The identity in one miner's replies (and its parsed reading). Pure; never raises on miner content."""
    serial = mac = hostname = hardware_id = None
    nameplate = None
    if dialect == "btminer":
        info = replies.get("get_miner_info", {}).get("Msg")
        info = info if isinstance(info, Mapping) else {}
        summary = _first(replies.get("summary"), "SUMMARY")
        serial, hostname = _text(info.get("minersn")), _text(info.get("hostname"))
        mac = _mac(info.get("mac")) or _mac(summary.get("MAC"))
        factory = _number(summary.get("Factory GHS"))
        nameplate = factory * GH if factory else None
    elif dialect == "luxos":
        config = _first(replies.get("config"), "CONFIG")
        serial, mac, hostname = _text(config.get("SerialNumber")), _mac(config.get("MACAddr")), \
            _text(config.get("Hostname"))
    elif dialect == "avalon":
        version = _first(replies.get("version"), "VERSION")
        mac, hardware_id = _mac(version.get("MAC")), _text(version.get("DNA"))
    elif dialect == "bmminer":
        hardware_id = _text(_stats_value(replies.get("stats"), "miner_id"))
        ideal = _number(_stats_value(replies.get("stats"), "total_rateideal"))
        nameplate = ideal * GH if ideal else None  # GH/s on every build seen (rate_unit "GH")
    model = reading.model if reading is not None else None
    spec = models.lookup(model) if models is not None else None
    if nameplate is None and spec is not None:
        nameplate = spec.nominal_hashrate_hs
    boards = len(reading.boards) if reading is not None and reading.boards else None
    return UnitIdentity(
        # The table's name where the model is known ("M30S++V40" and "Whatsminer M30S++" are one model).
        dialect=dialect, make=make_of(spec.name if spec is not None else model),
        model=spec.name if spec is not None else model,
        firmware=reading.firmware if reading is not None else None,
        firmware_version=reading.firmware_version if reading is not None else None,
        serial=serial, mac=mac, hostname=hostname, hardware_id=hardware_id, hashboards=boards,
        nameplate_hs=nameplate,
    )


@dataclass(slots=True)
class Entry:
    miner: str  # host:port
    identity: UnitIdentity
    first_seen_s: float
    last_seen_s: float
    present: bool = True  # False once vanished (kept, bounded, so a return is recognised)


def _same_model(a: str | None, b: str | None, models: ModelTable | None) -> bool:
    if a is None or b is None:
        return True
    spec_a, spec_b = (models.lookup(a), models.lookup(b)) if models is not None else (None, None)
    if spec_a is not None and spec_b is not None:
        return spec_a is spec_b
    return a.strip().lower() == b.strip().lower()


class Inventory:
    """Every miner seen, by host:port. One writer (the poller's loop); `save` is atomic."""

    def __init__(self, path: Path | None, site: str, *, models: ModelTable | None = None,
                 max_entries: int = 200_000) -> None:
        self.path = path
        self._models = models
        self._max = max_entries
        self._log = get_logger(site=site)
        self.entries: dict[str, Entry] = {}
        self.events = dict.fromkeys(EVENTS, 0)
        self.dirty = False

    # -- persistence ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the state file; a missing one is an empty inventory, a bad one is logged and set aside."""
        if self.path is None or not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("version") != STATE_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
            for row in doc["miners"][: self._max]:
                ident = UnitIdentity(**{k: row.get(k) for k in FIELDS})
                self.entries[str(row["miner"])] = Entry(str(row["miner"]), ident, float(row["first_seen_s"]),
                                                        float(row["last_seen_s"]), bool(row["present"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Never a reason not to monitor: start afresh, keep the bad file for the operator to read.
            self.entries.clear()
            self._log.warning("inventory_unreadable", path=str(self.path), error=str(exc)[:200])
            try:
                os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
            except OSError:
                pass

    def save(self) -> None:
        """Write the whole inventory to a temporary file beside the state file, then rename it over."""
        if self.path is None:
            self.dirty = False
            return
        doc = {"version": STATE_VERSION, "miners": self.rows()}
        data = json.dumps(doc, separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.dirty = False

    # -- changes ------------------------------------------------------------------------------------
    def observe(self, miner: str, seen: UnitIdentity, now_s: float, *, announce: bool = True) -> None:
        """A miner answered with `seen` (partial: only what this exchange reported). `announce` False: its first
        answer is expected (a listed address), recorded without a `miner_appeared` event."""
        entry = self.entries.get(miner)
        if entry is None or not entry.present:
            if entry is None:
                entry = self.entries[miner] = Entry(miner, seen, now_s, now_s)
            else:
                entry.identity, entry.present, entry.last_seen_s = entry.identity.merged(seen), True, now_s
            if announce:
                self._event("miner_appeared", miner, entry.identity)
            self.dirty = True
            self._bound()
            return
        old = entry.identity
        entry.last_seen_s = now_s
        if self._swapped(old, seen):
            # Another unit: what the old one reported about itself no longer holds.
            entry.identity = UnitIdentity().merged(seen)
            self._event("miner_swapped", miner, entry.identity, previous_serial=old.serial, previous_mac=old.mac,
                        previous_model=old.model, previous_unit=old.unit)
            return
        if old.firmware_version and seen.firmware_version and old.firmware_version != seen.firmware_version:
            entry.identity = old.merged(seen)
            self._event("miner_firmware_changed", miner, entry.identity, previous_version=old.firmware_version)
            return
        merged = old.merged(seen)
        if merged != old:
            entry.identity = merged
            self.dirty = True

    def vanish(self, miner: str, now_s: float) -> None:
        entry = self.entries.get(miner)
        if entry is None or not entry.present:
            return
        entry.present = False
        self._event("miner_vanished", miner, entry.identity, last_seen_s=entry.last_seen_s,
                    missing_s=round(now_s - entry.last_seen_s, 1))

    def present(self) -> list[str]:
        return [name for name, e in self.entries.items() if e.present]

    def _swapped(self, old: UnitIdentity, new: UnitIdentity) -> bool:
        for name in ("serial", "mac", "hardware_id"):
            a, b = getattr(old, name), getattr(new, name)
            if a and b and a != b:
                return True
        return not _same_model(old.model, new.model, self._models)

    def _event(self, event: str, miner: str, ident: UnitIdentity, **extra: Any) -> None:
        self.events[event] += 1
        self.dirty = True
        self._log.info(event, miner=miner, model=ident.model, serial=ident.serial, mac=ident.mac,
                       firmware_version=ident.firmware_version, **extra)

    def _bound(self) -> None:
        if len(self.entries) <= self._max:
            return
        gone = sorted((e for e in self.entries.values() if not e.present), key=lambda e: e.last_seen_s)
        for e in gone[: len(self.entries) - self._max]:
            del self.entries[e.miner]

    # -- views ---------------------------------------------------------------------------------------
    def rows(self, only: Iterable[str] | None = None) -> list[dict[str, Any]]:
        chosen = self.entries.values() if only is None else (self.entries[n] for n in only if n in self.entries)
        return [{"miner": e.miner, **asdict(e.identity), "unit": e.identity.unit, "present": e.present,
                 "first_seen_s": e.first_seen_s, "last_seen_s": e.last_seen_s} for e in chosen]


CSV_COLUMNS = ("miner", "present", *FIELDS, "unit", "first_seen_s", "last_seen_s")


def to_csv(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return out.getvalue()


def _cell(value: Any) -> Any:
    # A hostname is whatever the miner says: one starting like a formula must not run in a spreadsheet.
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value
