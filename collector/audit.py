"""The curtailment audit log: one JSON object per line, appended and flushed to disk, never rewritten.

Every plan, approval, rejection, command and outcome is a record with `at` (unix s), `site`, `event`, `who`
(`auto`, `collector`, or the operator's basic-auth user) and the facts of the event. On start the log is
read back to rebuild which miners megawatch has stopped and must restart: a restart never forgets one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from megawatch.collector.curtail import Curtailed
from megawatch.common.logs import get_logger

# Records that change which miners are curtailed; the others (plan, approve, reject, failed) are for people.
CURTAILED, VERIFIED, RESTORED, NOT_COMPLIED = "curtailed", "verified", "restored", "not_complied"
CAME_BACK = "came_back"  # a stopped miner hashing again by itself
MAX_LINE = 1 << 16  # a record is a few hundred bytes; a longer line is not ours


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.healthy = True  # the last write reached the disk (commands are held while it does not)
        self._log = get_logger()

    def write(self, at: float, site: str, event: str, who: str, **facts: Any) -> dict[str, Any]:
        record = {"at": round(at, 3), "site": site, "event": event, "who": who, **facts}
        if self.path is None:
            return record
        line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n"
        try:
            # O_APPEND: each record lands whole at the end, even if another process appends too.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if self.healthy:
                self._log.error("curtailment_audit_write_failed", path=str(self.path), error=str(exc))
            self.healthy = False
            return record
        if not self.healthy:
            self._log.info("curtailment_audit_write_recovered", path=str(self.path))
        self.healthy = True
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    record = json.loads(raw[:MAX_LINE])
                except ValueError:
                    # A torn last line after a crash: skipped, said once, the rest still counts.
                    self._log.warning("curtailment_audit_line_skipped", path=str(self.path), line=number)
                    continue
                if isinstance(record, dict):
                    yield record

    def curtailed(self) -> dict[str, dict[str, Curtailed]]:
        """site -> miner -> the record of every miner still curtailed by the log's account."""
        sites: dict[str, dict[str, Curtailed]] = {}
        for r in self.records():
            site, miner, event = r.get("site"), r.get("miner"), r.get("event")
            if not isinstance(site, str) or not isinstance(miner, str):
                continue
            held = sites.setdefault(site, {})
            if event == CURTAILED:
                agent_at = r.get("agent_at")
                held[miner] = Curtailed(miner=miner, agent=str(r.get("agent", "")),
                                        since=float(r["at"]), power_w=float(r.get("power_w") or 0.0),
                                        hashrate_hs=float(r.get("hashrate_hs") or 0.0), j_per_th=r.get("j_per_th"),
                                        agent_at=float(agent_at) if isinstance(agent_at, (int, float)) else None)
            elif event == VERIFIED and miner in held:
                held[miner] = replace(held[miner], verified=True)
            elif event in (RESTORED, NOT_COMPLIED, CAME_BACK):
                held.pop(miner, None)
        return {site: held for site, held in sites.items() if held}
