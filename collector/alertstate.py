"""Alert state on disk, so a restarted collector keeps firing what was firing (no spurious "resolved").

The file (`state_file` in the collector config) holds the pending and firing alerts with when each
condition started and when it fired. It is replaced atomically: written to a temporary file in the same
directory, fsynced, renamed over the old one, and the directory fsynced, so a crash at any moment leaves
either the old state or the new one, never half a file. A missing file means no alerts; an unreadable
one is logged and ignored (alerts then start afresh, as without a state file).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from megawatch.collector.model import Alert, AlertPhase, Severity
from megawatch.common.logs import get_logger

STATE_VERSION = 1


def alert_record(alert: Alert) -> dict[str, Any]:
    return {"name": alert.name, "labels": [list(kv) for kv in alert.labels], "severity": alert.severity.value,
            "phase": alert.phase.value, "since": alert.since, "fired_at": alert.fired_at,
            "summary": alert.summary, "description": alert.description, "value": alert.value}


def save_alerts(path: Path, alerts: Iterable[Alert], saved_at: float) -> None:
    """Write the active alerts to `path` atomically."""
    write_atomically(path, json.dumps({"version": STATE_VERSION, "saved_at": saved_at, "alerts": [
        alert_record(a) for a in alerts if a.phase is not AlertPhase.RESOLVED]}, indent=1).encode())


def write_atomically(path: Path, body: bytes) -> None:
    """Replace `path` with `body`: temp file + fsync + rename + directory fsync (also the energy accounts')."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def load_alerts(path: Path) -> list[Alert]:
    """The alerts saved in `path`; [] when there is none, or (logged) when it cannot be read."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        get_logger().error("alert_state_unreadable", path=str(path), error=str(exc))
        return []
    try:
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
        return [_alert(r) for r in doc["alerts"]]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        get_logger().error("alert_state_unreadable", path=str(path), error=f"{type(exc).__name__}: {exc}")
        return []


def _alert(r: dict[str, Any]) -> Alert:
    phase = AlertPhase(r["phase"])
    if phase is AlertPhase.RESOLVED:
        raise ValueError("a resolved alert in the state file")
    fired_at = r["fired_at"]
    return Alert(
        name=str(r["name"]), labels=tuple((str(k), str(v)) for k, v in r["labels"]),
        severity=Severity(r["severity"]), phase=phase, since=float(r["since"]),
        fired_at=float(fired_at) if fired_at is not None else None, resolved_at=None,
        summary=str(r["summary"]), description=str(r["description"]),
        value=float(r["value"]) if r["value"] is not None else None,
    )
