"""Faults a simulated miner can have, and the bytes the wire faults put on the socket.

Wire faults change what the client sees on TCP (refused, silence, slow bytes, broken or huge replies);
behaviour faults change what the miner measures (hotter, less hashrate, more power) and still answer
normally. Reboot is an event: the port refuses for `duration_s`, then the miner comes back with its
uptime and share counters reset.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

WIRE_FAULTS: tuple[str, ...] = (
    "offline", "hang", "slow", "drip", "malformed", "truncated", "reset", "oversize", "garbage", "empty",
    "reboot", "quirky", "lie",
)
BEHAVIOUR_FAULTS: tuple[str, ...] = ("overheat", "hashrate_drop", "power_surge")
# Wire faults after which a client cannot read the reply. `slow` is not one: its reply is complete and
# correct, only late, so the ground truth counts it as serving (an agent whose deadline is shorter than
# delay_s will miss it: that is the agent's choice, not the miner's state).
HIDING_FAULTS: frozenset[str] = frozenset(WIRE_FAULTS) - {"slow", "quirky", "lie"}
FAULT_KINDS: tuple[str, ...] = WIRE_FAULTS + BEHAVIOUR_FAULTS

# Parameters each kind takes, with defaults (all optional in YAML and in the control API).
PARAMETERS: dict[str, dict[str, float]] = {
    "slow": {"delay_s": 2.0},
    "drip": {"interval_ms": 100.0},
    "oversize": {"size_bytes": 4 * 1024 * 1024},
    "reboot": {"duration_s": 5.0},
    "hashrate_drop": {"drop": 0.5},  # share of the hashrate lost (a dead board ~0.33)
    "power_surge": {"factor": 1.3},
    "hang": {"max_s": 600.0},
    # The power figure the reply states instead of the true one; duplicate 1 keeps the true figure and
    # repeats the key with the lie after it (`"Power":3300,"Power":1e+308`).
    "lie": {"power_w": 1e308, "duplicate": 0.0},
}
LIMITS: dict[str, tuple[float, float]] = {
    "delay_s": (0.0, 600.0),
    "interval_ms": (1.0, 60000.0),
    "size_bytes": (1024.0, 64 * 1024 * 1024),
    "duration_s": (0.0, 3600.0),
    "drop": (0.0, 1.0),
    "factor": (1.0, 10.0),
    "max_s": (1.0, 86400.0),
    "power_w": (-1e308, 1e308),  # any finite figure: the lie is the point
    "duplicate": (0.0, 1.0),
}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    delay_s: float = 2.0
    interval_ms: float = 100.0
    size_bytes: int = 4 * 1024 * 1024
    duration_s: float = 5.0
    drop: float = 0.5
    factor: float = 1.3
    max_s: float = 600.0
    power_w: float = 1e308
    duplicate: float = 0.0

    @property
    def on_wire(self) -> bool:
        return self.kind in WIRE_FAULTS

    @property
    def hides_reply(self) -> bool:
        return self.kind in HIDING_FAULTS

    def describe(self) -> dict[str, object]:
        """The kind and only the parameters that kind uses (for /api/v1/miners)."""
        out: dict[str, object] = {"kind": self.kind}
        for name in PARAMETERS.get(self.kind, {}):
            out[name] = getattr(self, name)
        return out


def make_fault(kind: str, params: dict[str, float]) -> Fault:
    """Build a Fault; raises ValueError naming the bad kind or parameter (callers turn it into a 4xx)."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    allowed = PARAMETERS.get(kind, {})
    values: dict[str, float] = {}
    for name, value in params.items():
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise ValueError(f"fault {kind!r} takes no parameter {name!r} (takes: {known})")
        low, high = LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
        values[name] = value
    if "size_bytes" in values:
        values["size_bytes"] = int(values["size_bytes"])
    # Each key was checked against the kind's PARAMETERS and size_bytes made an int, which mypy cannot follow.
    return Fault(kind=kind, **values)  # type: ignore[arg-type]


def select_fraction(seed: int, salt: str, candidates: Sequence[str], fraction: float) -> list[str]:
    """Pick round(fraction * n) of `candidates`, the same ones for the same seed and salt.

    Ranks by a seeded hash of each address, so the choice does not depend on list order or on how the
    fleet is split over worker processes.
    """
    count = round(fraction * len(candidates))
    if fraction > 0 and count == 0 and candidates:
        count = 1  # "5 % of a 10-miner site" means at least one miner, not none
    ranked = sorted(candidates, key=lambda addr: _stable_hash(f"{seed}|{salt}|{addr}"))
    return ranked[:count]


def _stable_hash(text: str) -> int:
    # str hashing is salted per process and workers must agree with the parent; blake2b is neither
    # salted nor, unlike FNV, prone to rank near-identical strings ("…|17", "…|18") next to each other.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def malform(body: bytes) -> bytes:
    """Break the JSON past any repair a tolerant client makes: a stray token right after the first `{`."""
    return b"{@@" + body[1:] if body.startswith(b"{") else b"@@" + body


def quirk(body: bytes) -> bytes:
    """Invalid JSON the way real firmware writes it, which a tolerant client must repair (docs/protocol.md).

    `}{` between records (bmminer minerstats(), D3/L3+ captures), a comma before the closing brace
    (Whatsminer, bmminer) and `\'` inside strings (Whatsminer M20S `Firmware Version`). The values are
    untouched, so a client that repairs these reads exactly what a clean reply says.
    """
    quirky = body.replace(b"},{", b"}{").replace(b"'", b"\\'")
    return quirky[:-1] + b",}" if quirky.endswith(b"}") else quirky


def truncate(reply: bytes) -> bytes:
    """The first half of the reply: what a client sees when the firmware is cut off mid-send."""
    return reply[: max(1, len(reply) // 2)]


def garbage(seed: int, index: int, tick: int, size: int = 512) -> bytes:
    """Deterministic random bytes that never start a JSON object and hold no NUL."""
    out = bytearray()
    state = (seed * 1_000_003 + index * 7919 + tick) & 0xFFFFFFFFFFFFFFFF or 1
    while len(out) < size:
        # xorshift64: cheap, deterministic, good enough for noise
        state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 7
        state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
        out.extend(b for b in state.to_bytes(8, "little") if b not in (0, 0x7B))
    out[0] = 0xFF  # not "{", not ASCII: undecodable from the first byte
    return bytes(out[:size])


def oversize(body: bytes, size_bytes: int) -> bytes:
    """A valid reply padded to `size_bytes` with one huge string value (like a 67 KB M3 stats, x60)."""
    if not body.endswith(b"}"):
        return body + b" " * max(0, size_bytes - len(body))
    pad = max(0, size_bytes - len(body) - 12)
    return body[:-1] + b',"Padding":"' + b"x" * pad + b'"}'


# Where each dialect's reply states the miner's draw: btminer summary `Power`, bmminer (Hiveon) `total_power`,
# bosminer tunerstatus `ApproximateMinerPowerConsumption`, LuxOS `power` -> `Watts`.
_POWER_KEYS = re.compile(rb'("(?:Power|total_power|ApproximateMinerPowerConsumption|Watts)":\s*)(-?[0-9][0-9.eE+-]*)')
# Avalon packs it into a string: `WALLPOWER[3300]`.
_PACKED_POWER = re.compile(rb"(WALLPOWER\[)(-?[0-9][0-9.eE+-]*)(\])")


def lie(body: bytes, power_w: float, duplicate: bool) -> bytes:
    """The reply stating `power_w` as the miner's draw, every place a dialect reads it (the rest untouched).

    With `duplicate`, each JSON key keeps its true figure and is given again with the lie after it: JSON
    decoders keep the last of two equal keys, so a careless reader takes the lie. Avalon's figure lives
    inside a string, where there is no key to repeat: it is replaced either way.
    """
    figure = repr(float(power_w)).encode()
    if duplicate:
        body = _POWER_KEYS.sub(lambda m: m.group(0) + b"," + m.group(1) + figure, body)
    else:
        body = _POWER_KEYS.sub(lambda m: m.group(1) + figure, body)
    return _PACKED_POWER.sub(lambda m: m.group(1) + figure + m.group(3), body)
