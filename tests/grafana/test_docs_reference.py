"""The generated and hand-written references in docs/ and README.md stay true to the code.

- docs/metrics.md's metric reference equals the exporters' own render (generated; rewrite it with
  `MEGAWATCH_UPDATE_DOCS=1 pytest tests/grafana/test_docs_reference.py` and review the diff).
- docs/configuration.md documents every key its loader reads, and nothing the loader does not know.
- README's quick start is the two commands, and both are Makefile targets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.grafana.catalogue import METRICS_DOC, ROOT, documented_metric_reference, metric_reference

CONFIG_DOC = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"
# Section of docs/configuration.md -> the files whose loader reads that config file's keys.
CONFIG_LOADERS: dict[str, tuple[str, ...]] = {
    "Agent": ("agent/config.py", "common/logs.py", "common/configfile.py"),
    "Sites and allocations": ("collector/config.py", "collector/meterconfig.py", "collector/curtailconfig.py",
                              "collector/production.py",
                              "common/logs.py",
                              "common/configfile.py"),
    "Simulator": ("simulator/config.py", "simulator/faults.py"),
}
# `section.<reader>("key"` in a loader: every key a config file may hold.
_READ = re.compile(r"\.(?:string|number|integer|boolean|choice|strings|section|sections)\(\s*\"([a-z_0-9]+)\"")


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _documented_keys(section: str) -> list[str]:
    """Backticked keys in the first cell of each table row: `poll.interval_s`, `sites[].schedule[]`, ..."""
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [key for cell in rows for key in re.findall(r"`([^`]+)`", cell)]


def _parts(key: str) -> list[str]:
    return [part for part in re.sub(r"\[\]", "", key).split(".") if part]


def test_metric_reference_is_the_render() -> None:
    expected = metric_reference()
    current = documented_metric_reference()
    if os.environ.get("MEGAWATCH_UPDATE_DOCS") == "1" and current is not None and current != expected:
        METRICS_DOC.write_text(METRICS_DOC.read_text().replace(current, expected))
        current = expected
    assert current is not None, f"{METRICS_DOC.relative_to(ROOT)} has no generated metric reference block"
    assert current == expected, (f"{METRICS_DOC.relative_to(ROOT)}'s metric reference differs from what the agent "
                                 "and collector export: rerun with MEGAWATCH_UPDATE_DOCS=1 and review the diff")
    for name in ("megawatch_miner_power_watts", "megawatch_site_allocation_watts", "megawatch_agent_polls_total"):
        assert f"| `{name}` |" in current


def test_the_metric_reference_lives_only_in_docs() -> None:
    # One generated copy: a second one (README's old place) would drift without any test noticing.
    marker = "metric-reference:begin"
    holders = [p.relative_to(ROOT).as_posix() for p in [README, *sorted((ROOT / "docs").glob("*.md"))]
               if marker in p.read_text()]
    assert holders == ["docs/metrics.md"], holders


def test_documented_config_keys_exist_in_their_loaders() -> None:
    text = CONFIG_DOC.read_text()
    missing = []
    for title, loaders in CONFIG_LOADERS.items():
        source = "\n".join((ROOT / loader).read_text() for loader in loaders)
        keys = _documented_keys(_section(text, title))
        assert len(keys) >= 8, title
        for key in keys:
            for part in _parts(key):
                if f'"{part}"' not in source:
                    missing.append(f"{title} {key}: {part!r} is read by none of {', '.join(loaders)}")
    assert not missing, "\n".join(missing)


def test_every_key_a_loader_reads_is_documented() -> None:
    text = CONFIG_DOC.read_text()
    undocumented = []
    for title, loaders in CONFIG_LOADERS.items():
        documented = {part for key in _documented_keys(_section(text, title)) for part in _parts(key)}
        for key in sorted({k for loader in loaders[:1] for k in _READ.findall((ROOT / loader).read_text())}):
            if key not in documented:
                undocumented.append(f"{CONFIG_DOC.relative_to(ROOT)} ## {title}: no row for {key!r} ({loaders[0]})")
    assert not undocumented, "\n".join(undocumented)


def test_quick_start_is_make_demo_and_make_test() -> None:
    block = _section(README.read_text(), "Quick start").split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)


def test_readme_stays_short_and_points_into_docs() -> None:
    text = README.read_text()
    lines = text.count("\n")
    assert lines <= 120, f"README.md is {lines} lines: the operator's guide belongs in docs/"
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", text))
    pages = {p.relative_to(ROOT).as_posix() for p in Path(ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"
