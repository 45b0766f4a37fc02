"""README: the metric reference equals the exporters' render, the config keys it documents exist, and the
quick start is the two commands."""

from __future__ import annotations

import os
import re

from tests.grafana.catalogue import (
    README,
    ROOT,
    metric_reference,
    readme_metric_reference,
)

CONFIG_LOADERS = {"**Agent**": "agent/config.py", "**Sites and allocations**": "collector/config.py",
                  "**Simulator**": "simulator/config.py"}


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_metric_reference_is_the_render() -> None:
    expected = metric_reference()
    current = readme_metric_reference()
    if os.environ.get("MEGAWATCH_UPDATE_README") == "1" and current is not None and current != expected:
        README.write_text(README.read_text().replace(current, expected))
        current = expected
    assert current is not None, "README.md has no generated metric reference block"
    assert current == expected, ("README.md's metric reference differs from what the agent and collector export: "
                                 "rerun with MEGAWATCH_UPDATE_README=1 and review the diff")
    for name in ("megawatch_miner_power_watts", "megawatch_site_allocation_watts", "megawatch_agent_polls_total"):
        assert f"| `{name}` |" in current


def test_documented_config_keys_exist_in_their_loaders() -> None:
    section = _section(README.read_text(), "Configuration reference")
    parts = re.split(r"^(\*\*[^*]+\*\*).*$", section, flags=re.MULTILINE)
    tables = dict(zip(parts[1::2], parts[2::2]))
    assert set(tables) == set(CONFIG_LOADERS), sorted(tables)
    missing = []
    for title, table in tables.items():
        source = (ROOT / CONFIG_LOADERS[title]).read_text()
        rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
        assert len(rows) >= 8, title
        for cell in rows:
            for key in re.findall(r"`([^`]+)`", cell):
                for part in re.sub(r"\[\]", "", key).split("."):
                    if f'"{part}"' not in source:
                        missing.append(f"{title} {key}: {part!r} not in {CONFIG_LOADERS[title]}")
    assert not missing, "\n".join(missing)


def test_quick_start_is_make_demo_and_make_test() -> None:
    block = _section(README.read_text(), "Quick start").split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)
