"""The model table (agent/models.yaml) and estimate_power: lookup by what miners really report."""

from __future__ import annotations

from pathlib import Path

import pytest

from megawatch.agent.model import MinerReading, PowerSource
from megawatch.agent.modeltable import ModelTable, estimate_power, load_model_table
from megawatch.common.configfile import ConfigError

TH = 1e12


@pytest.fixture(scope="module")
def table() -> ModelTable:
    return load_model_table()


@pytest.mark.parametrize(
    ("reported", "name"),
    [
        ("M30S++V40", "Whatsminer M30S++"),  # btminer appends the board revision
        ("M30S+", "Whatsminer M30S+"),  # "+" is part of the identity, not punctuation
        ("M30S", "Whatsminer M30S"),
        ("Antminer S19 XP (Vnish 1.2.0-rc1)", "Antminer S19 XP"),  # Vnish's stats Type
        ("Antminer S19", "Antminer S19"),  # stock bmminer Type
        ("Antminer S9k", "Antminer S9k"),
        ("AvalonMiner 1366", "Avalon A1366"),
        ("AvalonMiner 15-194", "Avalon A1566"),
        ("M30S+_VE40", "Whatsminer M30S+"),
        ("antminer   s21   pro", "Antminer S21 Pro"),
        # Whatsminer devdetails Model with an underscore before the board revision.
        ("M30S++_VH70", "Whatsminer M30S++"),
        ("WhatsMiner M60S_VK30", "Whatsminer M60S"),
        ("M56S++VK30", "Whatsminer M56S++"),
        # Antminer `Type` strings, the hydro models with Bitmain's "Hyd." spelling.
        ("Antminer T21", "Antminer T21"),
        ("Antminer S21+", "Antminer S21+"),
        ("Antminer S21+ Hyd.", "Antminer S21+ Hyd"),
        ("Antminer S21 Hyd.", "Antminer S21 Hyd"),
        ("Antminer S21 XP", "Antminer S21 XP"),
        ("Antminer S21 XP Hyd.", "Antminer S21 XP Hyd"),
        ("Antminer S19j Pro+", "Antminer S19j Pro+"),
        ("Antminer S19k Pro", "Antminer S19k Pro"),
        # Avalon version PROD strings (MODEL alone is "1566" / "15-194").
        ("AvalonMiner 1566", "Avalon A1566"),
        ("AvalonMiner 1466", "Avalon A1466"),
        ("15-194", "Avalon A1566"),
    ],
)
def test_models_are_found_as_miners_report_them(table: ModelTable, reported: str, name: str) -> None:
    spec = table.lookup(reported)
    assert spec is not None and spec.name == name


def test_braiins_devdetails_model_is_found(table: ModelTable) -> None:
    # Braiins OS devdetails says "Bitmain Antminer S9" (tests/golden/replies/bosminer/0.2.0-ea64aec8e).
    spec = table.lookup("Bitmain Antminer S9")
    assert spec is not None and spec.name == "Antminer S9"


@pytest.mark.parametrize(
    "reported",
    # A bigger or hydro sibling of a listed model is not that model: its J/TH would be wrong.
    [None, "", "Antminer Z15", "M30S++V40 Turbo", "M60S++_VL30", "M63S_VL10", "Antminer S21e XP Hyd."],
)
def test_unknown_models_are_not_guessed(table: ModelTable, reported: str | None) -> None:
    assert table.lookup(reported) is None


# Families whose names differ only by "+", "Pro", "XP" or "Hyd.": each string must find its own entry.
SIBLINGS = [
    ("M30S", "M30S+", "M30S++", "M30S++_VH70"),
    ("Antminer S21", "Antminer S21+", "Antminer S21 Pro", "Antminer S21 XP", "Antminer S21 Hyd.",
     "Antminer S21+ Hyd.", "Antminer S21 XP Hyd."),
    ("Antminer S19j Pro", "Antminer S19j Pro+", "Antminer S19 Pro", "Antminer S19k Pro"),
    ("Avalon A16", "Avalon A16 XP"),
]


@pytest.mark.parametrize("family", SIBLINGS, ids=lambda family: family[0])
def test_sibling_models_do_not_collide(table: ModelTable, family: tuple[str, ...]) -> None:
    names = [getattr(table.lookup(reported), "name", None) for reported in family]
    assert None not in names, dict(zip(family, names, strict=True))
    # The last M30S++ string is a revision of the one before it; every other string is its own model.
    distinct = set(names)
    assert len(distinct) == len(family) - (1 if family[-1].endswith("_VH70") else 0), names


def test_the_shipped_table_loads_with_sane_figures(table: ModelTable) -> None:
    # Current models must be there; every figure must be plausible for a SHA-256 ASIC and say where it is from.
    for model in ("S19", "S19 XP", "S21", "M30S++", "M50", "M60", "A1366", "T21", "S21+", "S21 XP", "S19j Pro+",
                  "S19k Pro", "M60S", "A1466", "A1566"):
        assert table.lookup(model) is not None, model
    for spec in table.specs:
        assert 10 * TH <= spec.nominal_hashrate_hs <= 500 * TH, spec
        assert 10 <= spec.joules_per_hash * TH <= 120, spec
        assert len(spec.source) >= 20 and "\n" not in spec.source, spec
    s19xp = table.lookup("S19 XP")
    assert s19xp is not None
    assert s19xp.nominal_power_w == pytest.approx(140 * 21.5)


def _reading(**fields: object) -> MinerReading:
    return MinerReading(dialect="bmminer", **fields)  # type: ignore[arg-type]


def test_firmware_power_is_kept_as_it_is(table: ModelTable) -> None:
    reading = _reading(model="Antminer S9", hashrate_hs=13.5 * TH, power_w=1419.0, power_source=PowerSource.FIRMWARE)
    assert estimate_power(reading, table) is reading


def test_power_is_estimated_from_j_per_th_and_the_short_window_hashrate(table: ModelTable) -> None:
    reading = _reading(model="Antminer S19 XP (Vnish 1.2.0-rc1)", hashrate_hs=100 * TH, hashrate_avg_hs=140 * TH)
    estimated = estimate_power(reading, table)
    assert estimated.power_w == pytest.approx(100 * 21.5)
    expected = reading._replace(power_source=PowerSource.ESTIMATE)
    assert estimated._replace(power_w=None) == expected


def test_the_average_hashrate_is_used_when_the_short_window_is_unknown(table: ModelTable) -> None:
    estimated = estimate_power(_reading(model="M30S++V40", hashrate_avg_hs=112 * TH), table)
    assert estimated.power_w == pytest.approx(112 * 31)
    assert estimated.power_source == PowerSource.ESTIMATE


@pytest.mark.parametrize(
    ("reading", "why"),
    [
        (
            _reading(model="Antminer Z15", hashrate_hs=1e12),
            "power unknown: model 'Antminer Z15' is not in the model table",
        ),
        (_reading(hashrate_hs=1e12), "power unknown: model None is not in the model table"),
        (
            _reading(model="Antminer S19", hashrate_hs=0.0, hashrate_avg_hs=0.0),
            "power unknown: miner reports 0 H/s, so J/TH gives no estimate",
        ),
        (_reading(model="Antminer S19"), "power unknown: no hashrate to estimate from"),
    ],
)
def test_without_model_or_hashrate_power_stays_unknown_never_0(
    table: ModelTable, reading: MinerReading, why: str
) -> None:
    estimated = estimate_power(reading._replace(problems=("earlier note",)), table)
    assert (estimated.power_w, estimated.power_source) == (None, None)
    assert estimated.problems == ("earlier note", why)


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_model_table(path)
    return str(caught.value).replace(str(path), "models.yaml")


def test_bad_values_and_unknown_keys_are_all_reported_with_file_line_and_key(tmp_path: Path) -> None:
    text = (
        "models:\n"
        "  - {name: Antminer S9, aliases: [S9], nominal_hashrate_ths: 0, efficiency_j_per_th: 98, source: sheet}\n"
        "  - name: Antminer S19\n"
        "    nominal_hashrate_ths: 95\n"
        "    efficiency_j_per_th: abc\n"
        "    source: Bitmain S19 spec sheet\n"
        "    colour: red\n"
    )
    assert _load_error(tmp_path, text).splitlines() == [
        "models.yaml:2: models[0].nominal_hashrate_ths: expected a number > 0, got 0",
        "models.yaml:5: models[1].efficiency_j_per_th: expected a number > 0, got 'abc'",
        "models.yaml:7: models[1].colour: unknown key; known keys: "
        "aliases, efficiency_j_per_th, name, nominal_hashrate_ths, source",
    ]


def test_every_entry_must_say_where_its_figures_come_from(tmp_path: Path) -> None:
    text = (
        "models:\n"
        "  - {name: Antminer T21, nominal_hashrate_ths: 190, efficiency_j_per_th: 19}\n"
        "  - name: Antminer S21+\n"
        "    nominal_hashrate_ths: 216\n"
        "    efficiency_j_per_th: 16.5\n"
        "    source: '  '\n"
    )
    assert _load_error(tmp_path, text).splitlines() == [
        "models.yaml:2: models[0].source: required key is missing",
        "models.yaml:6: models[1].source: expected a non-empty string, got '  '",
    ]


def test_an_alias_naming_two_models_is_an_error(tmp_path: Path) -> None:
    text = (
        "models:\n"
        "  - {name: Antminer S9, nominal_hashrate_ths: 13.5, efficiency_j_per_th: 98, source: a}\n"
        "  - {name: Antminer S9 again, aliases: [s-9], nominal_hashrate_ths: 14, efficiency_j_per_th: 90, source: b}\n"
    )
    assert _load_error(tmp_path, text) == "models.yaml:3: models[1].aliases: 's-9' already names 'Antminer S9'"


def test_duplicate_keys_and_a_missing_section_are_errors(tmp_path: Path) -> None:
    assert _load_error(tmp_path, "models:\n  - {name: A, name: B}\n") == (
        "models.yaml:2: invalid YAML: duplicate key 'name' (first at line 2)"
    )
    assert _load_error(tmp_path, "modles: []\n").splitlines() == [
        "models.yaml:1: models: required key is missing",
        "models.yaml:1: modles: unknown key (did you mean 'models'?)",
    ]


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model_table(tmp_path / "absent.yaml")
    assert str(caught.value) == f"{tmp_path / 'absent.yaml'}: cannot read file: No such file or directory"
