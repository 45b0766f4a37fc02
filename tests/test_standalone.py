"""The repository stands alone: product files cite nothing outside it, and the docs' links and paths resolve.

"Product files" are everything git tracks except tests/ and .ci/: code, configs, docs, README, pyproject,
Makefile and bench/ (shipped in the repo, so read by users). A user has neither the notes a change was
worked out from nor the issue tracker it came from, so a citation of either is a dead end for them; the
fact itself, or a pointer into docs/, is what belongs there.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a product file must not contain, with why it is a dead end for a reader. The names are split so
# that grepping the whole tree for them finds real citations only, not this file.
SHARED, PERF, PROTOCOL = "shared" + "/", "PERF" + "-NOTES", "CGMINER" + "-API"
FORBIDDEN: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a path into the team's shared folder", re.compile(re.escape(SHARED))),
    ("the performance notes, not in the repo", re.compile(PERF)),
    ("the protocol notes, not in the repo (see docs/protocol.md)", re.compile(PROTOCOL)),
    ("a section sign citing an outside document", re.compile(r"§")),
    ("a capture file outside the repo (golden copies live in tests/golden/)",
     re.compile(r"(?<![\w/.-])captures/")),
    ("an issue number", re.compile(r"\b[Ii]ssues?\s*#?\d+")),
)

DOC_ROOTS = ("README.md", "docs")
# Markdown inline links and images: [text](target) / ![alt](target); the target ends at whitespace or `)`.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A repository path in backticks, e.g. `configs/agent.yaml` or `configs/sim/*.yaml`.
_TOP_DIRS = ("agent", "collector", "common", "simulator", "megawatch", "configs", "grafana", "bench", "tests",
             "docs")
_CODE_PATH = re.compile(r"`((?:" + "|".join(_TOP_DIRS) + r")/[\w.*/-]*)`")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"git ls-files unavailable: {exc}")
    return [name for name in out.stdout.decode().split("\0") if name]


def ignored(path: str) -> bool:
    """Whether git ignores `path` (a new page not yet added is fine; a build artefact is not)."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30).returncode == 0


def product_files() -> list[Path]:
    files = []
    for name in tracked_files():
        if name.startswith(("tests/", ".ci/")) or name == "tests":
            continue
        path = ROOT / name
        if path.is_file():
            files.append(path)
    return files


def citations(path: Path) -> list[str]:
    """`file:line: what` for every forbidden citation in one file (binary files have none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    found = []
    rel = path.relative_to(ROOT)
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN:
            match = pattern.search(line)
            if match:
                found.append(f"{rel}:{number}: {what}: {match.group(0)!r} in {line.strip()[:100]!r}")
    return found


def doc_files() -> list[Path]:
    out = []
    for name in DOC_ROOTS:
        path = ROOT / name
        out.extend(sorted(path.glob("*.md")) if name == "docs" else [path] if path.is_file() else [])
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(path: Path, tracked: set[str], source: str | None = None) -> list[str]:
    """Links and backticked paths in one page (`source`, or the file's text) that do not resolve."""
    source = path.read_text(encoding="utf-8") if source is None else source
    text = re.sub(r"```.*?```", "", source, flags=re.DOTALL)
    rel = path.relative_to(ROOT)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ...: not ours to resolve offline
        file_part, _, fragment = target.partition("#")
        if not file_part:
            if fragment not in anchors(source):
                broken.append(f"{rel}: link {target!r}: no heading #{fragment} on this page")
            continue
        dest = (path.parent / file_part).resolve()
        try:
            inside = dest.relative_to(ROOT).as_posix()
        except ValueError:
            broken.append(f"{rel}: link {target!r} leaves the repository")
            continue
        if not dest.exists():
            broken.append(f"{rel}: link {target!r}: no such file {inside}")
        elif dest.is_file() and inside not in tracked and ignored(inside):
            broken.append(f"{rel}: link {target!r}: {inside} is git-ignored, so no clone has it")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{rel}: link {target!r}: {inside} has no heading #{fragment}")
    for code_path in _CODE_PATH.findall(text):
        pattern = code_path.rstrip("/")
        exists = any(ROOT.glob(pattern)) if "*" in pattern else (ROOT / pattern).exists()
        if not exists:
            broken.append(f"{rel}: path `{code_path}` does not exist in the repository")
    return broken


def test_product_files_cite_nothing_outside_the_repo() -> None:
    files = product_files()
    assert len(files) > 50, f"expected the whole product tree, found {len(files)} files"
    found = [hit for path in files for hit in citations(path)]
    assert not found, "product files cite what a user does not have:\n" + "\n".join(found)


def test_the_check_sees_each_kind_of_citation() -> None:
    # The patterns are the test: each must catch its kind, and ordinary prose must pass.
    issue = "issue"
    bad = [f"see {SHARED}STYLE.md", f"({PERF})", f"{PROTOCOL}.md", "as in §3.1", "captures/x.txt",
           f"{issue} 7", f"{issue.title()} 3's table", f"{issue}s 3 and 7", f"pyasic {issue} #212"]
    good = ["tests/golden/replies/bmminer/x/stats.bin", "an issue with the miner", "7 issues"]
    for line in bad:
        assert any(p.search(line) for _, p in FORBIDDEN), line
    for line in good:
        assert not any(p.search(line) for _, p in FORBIDDEN), line


def test_relative_links_and_paths_in_the_docs_resolve() -> None:
    docs = doc_files()
    assert (ROOT / "README.md") in docs and len(docs) > 1, "README.md and docs/*.md"
    tracked = set(tracked_files())
    broken = [problem for path in docs for problem in broken_links(path, tracked)]
    assert not broken, "\n".join(broken)


def test_the_link_check_catches_a_dead_link() -> None:
    page = ROOT / "docs" / "probe.md"  # never written: the text is passed in
    text = ("# Probe\n[gone](missing.md) [ok](../README.md) [bad anchor](../README.md#no-such-heading)\n"
            "[self](#probe) [self, wrong](#nope) `configs/no-such-file.yaml` `configs/sim/*.yaml`\n"
            "[web](https://example.net/x)\n")
    problems = broken_links(page, set(tracked_files()), text)
    assert len(problems) == 4, problems
    assert any("#nope" in p for p in problems)
    assert any("missing.md" in p for p in problems)
    assert any("no-such-heading" in p for p in problems)
    assert any("no-such-file.yaml" in p for p in problems)
