"""A miner's firmware as exported: a real change is followed and logged once; a flapping string is not.

Each case is what one miner's firmware version says poll after poll, the firmware_version label /metrics
shows after each poll, and the firmware events logged. The label may change at most once per settled
change, so a string that changes every poll cannot make a new Prometheus series every cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from megawatch.agent.config import load_agent_config
from megawatch.agent.exposition import render_miners
from megawatch.agent.identity import STABLE_POLLS
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState

FLAP = [f"1.0.{i}" for i in range(8)]
# (versions said poll by poll, versions exported poll by poll, firmware events in order)
CASES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "steady": (["1.0"] * 5, ["1.0"] * 5, []),
    "upgrade": (["1.0", "2.0", "2.0", "2.0", "2.0"], ["1.0", "1.0", "1.0", "2.0", "2.0"], ["miner_firmware_changed"]),
    "every poll": (FLAP, [FLAP[0]] * len(FLAP), ["firmware_unstable"]),
    "flap then back": (["1.0", "a", "b", "c", "1.0", "1.0", "1.0", "1.0"], ["1.0"] * 8,
                       ["firmware_unstable", "firmware_unstable_ended"]),
    "one odd reply": (["1.0", "1.1", "1.0", "1.0"], ["1.0"] * 4, []),
    "flap then settle": (["1.0", "a", "b", "c", "2.0", "2.0", "2.0", "2.0"],
                         ["1.0"] * 6 + ["2.0"] * 2, ["firmware_unstable", "miner_firmware_changed"]),
}


class _Firmware:
    """One miner whose version is the next of `versions` on each poll; counts detection rounds."""

    def __init__(self, versions: list[str]) -> None:
        self.versions = versions
        self.poll = 0
        self.detections = 0

    async def __call__(self, host: str, commands: tuple[str, ...], **_: object) -> Any:
        from tests.agent.test_poller import Result

        if "version" in commands:
            self.detections += 1
        fw = self.versions[min(self.poll, len(self.versions) - 1)]
        return Result({c: {"VERSION": [{"dialect": "fake"}]} if c == "version"
                       else {"SUMMARY": [{"hs": 1e12, "model": "S19", "fw": fw}]} for c in commands})


@pytest.mark.parametrize("case", CASES)
async def test_firmware_label_follows_changes_not_flapping(tmp_path: Path, case: str) -> None:
    from tests.agent.test_poller import DIALECTS, _detect

    said, exported, events = CASES[case]
    path = tmp_path / "agent.yaml"
    path.write_text("site: s1\nminers:\n  - address: 127.1.0.1\n")
    config = load_agent_config(path)
    state = FleetState(config.site, len(config.miners))
    query = _Firmware(said)
    poller = Poller(config, state, query=query, deadlines=object(), dialects=DIALECTS, detect=_detect)
    labels = []
    with capture_logs() as logs:
        for n in range(len(said)):
            query.poll = n
            snapshot = await poller.poll_once()
            text = render_miners(snapshot, config.exposition)
            (info,) = [s for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "megawatch_miner_info"]
            labels.append(info.labels["firmware_version"])
    assert labels == exported
    assert [e["event"] for e in logs if "firmware_" in e["event"]] == events
    assert len(set(labels)) <= 2
    # A version that changes every poll stops costing a detection round each poll.
    assert query.detections <= STABLE_POLLS + 2, query.detections
