"""Where a one-shot command's text goes: standard output, or the file named by --out."""

from __future__ import annotations

import sys
from pathlib import Path


def emit(text: str, out: str | None) -> int:
    """Write `text` to `out` (stdout when None); the exit code, with one line on stderr when the file fails."""
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
