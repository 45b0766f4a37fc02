"""The firmware a miner runs, as exported: it follows a real change, not a string that changes every poll.

`firmware` and `firmware_version` are labels of megawatch_miner_info, so each new value is a new series in
Prometheus. A miner whose firmware string changes on every poll (broken or hostile firmware, two machines
answering on one address) would make a new series each cycle. So a new value is exported once the miner
has said it STABLE_POLLS polls in a row (an upgrade), or at once when the miner was re-detected as another
dialect (a reflash or another machine: the replies prove it). The inventory, which reads the settled value,
then logs miner_firmware_changed once. Until then the last settled value stays; after UNSTABLE_AFTER
unsettled changes the miner is logged firmware_unstable (once, until it keeps one value again:
firmware_unstable_ended).

The model is not held back: the power estimate must use the J/TH of the machine that answers now.
"""

from __future__ import annotations

from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from megawatch.agent.model import MinerReading
from megawatch.agent.modeltable import replace_reading

STABLE_POLLS = 3
UNSTABLE_AFTER = 3

Seen = tuple[str | None, str | None]  # (firmware, firmware_version)


@dataclass(slots=True)
class FirmwareIdentity:
    """One miner's settled firmware and the evidence for a change."""

    settled: Seen | None = None
    dialect: str | None = None  # the dialect the settled value was seen under
    pending: Seen | None = None
    pending_polls: int = 0
    changes: int = 0  # unsettled changes since the settled value was adopted
    steady_polls: int = 0  # polls in a row that said the settled value
    unstable: bool = False

    def settle(self, reading: MinerReading, dialect: str | None, log: FilteringBoundLogger,
               miner: str) -> MinerReading:
        """`reading` with the firmware fields to export; logs the changes."""
        seen = (reading.firmware, reading.firmware_version)
        if self.settled is None or (dialect != self.dialect and seen != self.settled):
            self._adopt(seen, dialect)
            return reading
        self.dialect = dialect
        if seen == self.settled:
            self.pending, self.pending_polls = None, 0
            self.steady_polls += 1
            if self.steady_polls >= STABLE_POLLS and self.changes:
                if self.unstable:
                    log.info("firmware_unstable_ended", miner=miner, firmware=seen[0], firmware_version=seen[1])
                self.changes, self.unstable = 0, False
            return reading
        self.steady_polls = 0
        if seen == self.pending:
            self.pending_polls += 1
        else:
            self.pending, self.pending_polls = seen, 1
            self.changes += 1
        if self.pending_polls >= STABLE_POLLS:
            self._adopt(seen, dialect)
            return reading
        if self.changes >= UNSTABLE_AFTER and not self.unstable:
            self.unstable = True
            log.warning("firmware_unstable", miner=miner, changes=self.changes, exported=list(self.settled),
                        latest=list(seen), note=f"labels keep the last value seen {STABLE_POLLS} polls in a row")
        return replace_reading(reading, firmware=self.settled[0], firmware_version=self.settled[1])

    def _adopt(self, seen: Seen, dialect: str | None) -> None:
        self.settled, self.dialect = seen, dialect
        self.pending, self.pending_polls, self.changes, self.steady_polls, self.unstable = None, 0, 0, 0, False
