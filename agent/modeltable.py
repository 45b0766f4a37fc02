"""The miner model table (agent/models.yaml) and power estimates from it."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from megawatch.agent.model import MinerReading, PowerSource
from megawatch.common.configfile import Section

# Shipped inside the package so an installed agent finds it from any folder.
DEFAULT_MODELS_PATH = Path(__file__).resolve().parent / "models.yaml"
TH = 1e12  # H/s per TH/s; J/TH to J/H is the same factor

_VENDOR_PREFIXES = ("antminer", "whatsminer", "avalonminer", "avalon", "bitmain", "microbt", "canaan")
# Whatsminer reports the board revision after the model ("M30S++V40", "M30S+_VE40"); it does not change J/TH much.
_REVISION_SUFFIX = re.compile(r"v[a-z]?\d+$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    nominal_hashrate_hs: float
    joules_per_hash: float
    source: str = ""  # the maker's spec behind the two figures, and where it was read

    @property
    def nominal_power_w(self) -> float:
        return self.nominal_hashrate_hs * self.joules_per_hash


# Miners repeat the same few model strings poll after poll: normalise each once (bounded, pure).
@functools.lru_cache(maxsize=4096)
def normalise_model(model: str) -> str:
    """Reduce a model string to its identity: "Antminer S19 XP" and "S19XP" both give "s19xp"."""
    # "+" is significant for Whatsminer (M30S, M30S+, M30S++); keep it.
    key = re.sub(r"\(.*?\)", "", model.lower())
    key = re.sub(r"[^a-z0-9+]", "", key)
    # Vendors stack up: Braiins reports "Bitmain Antminer S9".
    stripped = True
    while stripped:
        stripped = False
        for prefix in _VENDOR_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key, stripped = key[len(prefix):], True
                break
    return _REVISION_SUFFIX.sub("", key) or key


@dataclass(frozen=True, slots=True)
class ModelTable:
    specs: tuple[ModelSpec, ...]
    by_key: dict[str, ModelSpec]

    def lookup(self, model: str | None) -> ModelSpec | None:
        if not model:
            return None
        return self.by_key.get(normalise_model(model))


def load_model_table(path: str | Path = DEFAULT_MODELS_PATH) -> ModelTable:
    """Load and validate the model table; raises ConfigError naming file, line and key."""
    top = Section.of_file(path, "model table")
    specs: list[ModelSpec] = []
    by_key: dict[str, ModelSpec] = {}
    for item in top.sections("models", required=True):
        name = item.string("name")
        aliases = item.strings("aliases", ())
        hashrate_ths = item.number("nominal_hashrate_ths", exclusive_minimum=0)
        j_per_th = item.number("efficiency_j_per_th", exclusive_minimum=0)
        # A figure nobody can trace is a guess about a site's power: every entry says where its figures come from.
        source = item.string("source")
        item.done()
        if name is None or hashrate_ths is None or j_per_th is None or source is None:
            continue
        spec = ModelSpec(name=name, nominal_hashrate_hs=hashrate_ths * TH, joules_per_hash=j_per_th / TH,
                         source=" ".join(source.split()))
        specs.append(spec)
        for alias in (name, *aliases):
            key = normalise_model(alias)
            other = by_key.get(key)
            if other is not None and other is not spec:
                item.error("aliases", f"{alias!r} already names {other.name!r}")
            by_key[key] = spec
    top.done()
    top.problems.raise_if_any()
    return ModelTable(specs=tuple(specs), by_key=by_key)


def estimate_power(reading: MinerReading, table: ModelTable) -> MinerReading:
    """Fill in power from the model's J/TH when the firmware does not report it.

    Unknown model or unknown hashrate leaves power unknown (None) and says why in `problems`.
    """
    if reading.power_w is not None:
        return reading
    spec = table.lookup(reading.model)
    if spec is None:
        why = f"power unknown: model {reading.model!r} is not in the model table"
        return replace_reading(reading, problems=(*reading.problems, why))
    hashrate = reading.hashrate_hs if reading.hashrate_hs is not None else reading.hashrate_avg_hs
    if hashrate is None:
        why = "power unknown: no hashrate to estimate from"
        return replace_reading(reading, problems=(*reading.problems, why))
    if hashrate <= 0:
        # A miner that hashes nothing still draws something (fans, control board, a sleeping PSU):
        # J/TH x 0 would claim 0 W, which we cannot know.
        why = "power unknown: miner reports 0 H/s, so J/TH gives no estimate"
        return replace_reading(reading, problems=(*reading.problems, why))
    return replace_reading(reading, power_w=hashrate * spec.joules_per_hash, power_source=PowerSource.ESTIMATE)


_FIELD_POSITION = {name: position for position, name in enumerate(MinerReading._fields)}


def replace_reading(reading: MinerReading, **changes: object) -> MinerReading:
    """MinerReading._replace without its per-call generic machinery (once per poll, most miners)."""
    values: list[object] = list(reading)
    for name, value in changes.items():
        values[_FIELD_POSITION[name]] = value
    return tuple.__new__(MinerReading, values)
