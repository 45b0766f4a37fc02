"""common/configfile: every problem is one `file:line: key: message` line, all collected, none raised early."""

from __future__ import annotations

from pathlib import Path

import pytest

from megawatch.common.configfile import ConfigError, Section, parse_yaml


def _section(tmp_path: Path, text: str) -> Section:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return Section.of_file(path)


def _problems(sec: Section) -> list[str]:
    prefix = sec.problems.path + ":"
    return [str(p).removeprefix(prefix) for p in sec.problems.items]


def test_duplicate_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _section(tmp_path, "a: 1\nb: 2\na: 3\n")
    assert str(info.value) == f"{tmp_path / 'c.yaml'}:3: invalid YAML: duplicate key 'a' (first at line 1)"


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _section(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    assert str(info.value).startswith(f"{tmp_path / 'c.yaml'}:3: invalid YAML: ")


def test_typed_getters_collect_every_problem(tmp_path: Path) -> None:
    sec = _section(tmp_path, "n: twelve\ni: 1.5\nb: 1\nc: blue\nok: 4\nneg: -1\nflag: true\nnan: .nan\n")
    assert sec.number("n") is None
    assert sec.integer("i", 7) == 7
    assert sec.boolean("b", False) is False
    assert sec.choice("c", ("red", "green")) is None
    assert sec.integer("ok", minimum=1) == 4
    assert sec.number("neg", exclusive_minimum=0) is None
    assert sec.integer("flag", 0) == 0  # YAML true is not the integer 1
    assert sec.number("nan") is None
    assert _problems(sec) == [
        "1: n: expected a number, got 'twelve'",
        "2: i: expected an integer, got 1.5",
        "3: b: expected true or false, got 1",
        "4: c: expected one of red, green, got 'blue'",
        "6: neg: expected a number > 0, got -1",
        "7: flag: expected an integer, got True",
        "8: nan: expected a number, got nan",
    ]


def test_unknown_keys_suggest_the_closest_known_one(tmp_path: Path) -> None:
    sec = _section(tmp_path, "interval: 1\nintervl: 2\nzzz: 3\n")
    sec.number("interval")
    sec.done()
    assert _problems(sec) == [
        "2: intervl: unknown key (did you mean 'interval'?)",
        "3: zzz: unknown key; known keys: interval",
    ]


def test_nested_sections_and_lists_carry_dotted_paths(tmp_path: Path) -> None:
    sec = _section(tmp_path, "poll:\n  every: x\nitems:\n  - {name: a}\n  - name: 5\n  - plain\nbad: 3\n")
    poll = sec.section("poll")
    poll.number("every")
    names = [item.string("name") for item in sec.sections("items")]
    list(sec.sections("bad"))
    assert names == ["a", None, None]
    assert _problems(sec) == [
        "2: poll.every: expected a number, got 'x'",
        "5: items[1].name: expected a non-empty string, got 5",
        "6: items[2]: expected a mapping, got 'plain'",
        "7: bad: expected a list, got 3",
    ]


def test_missing_required_key_and_empty_file(tmp_path: Path) -> None:
    sec = _section(tmp_path, "")
    assert sec.string("site") is None
    assert sec.string("other", "dflt") == "dflt"
    assert _problems(sec) == ["1: site: required key is missing"]
    with pytest.raises(ConfigError):
        sec.problems.raise_if_any()


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    sec = _section(tmp_path, "- a\n- b\n")
    sec.string("site", None)
    sec.done()
    # Nothing of it is shown: a file that is not a mapping may be a password file named by mistake.
    assert _problems(sec) == ["1: not a valid config file (expected a YAML mapping of settings, got a list)"]


def test_a_file_that_is_not_utf8_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"a: 1\nb: \xff\xfe\x00bad\n")
    with pytest.raises(ConfigError) as info:
        Section.of_file(tmp_path / "bin.yaml")
    assert str(info.value) == f"{tmp_path / 'bin.yaml'}:2: not UTF-8 text (byte 0xff)"


def test_parse_yaml_keeps_value_lines() -> None:
    data = parse_yaml("a: 1\nb:\n  - x\n  - y\n", "mem.yaml")
    assert data == {"a": 1, "b": ["x", "y"]}
    assert data.lines == {"a": 1, "b": 3}
    assert data["b"].lines == [3, 4]
