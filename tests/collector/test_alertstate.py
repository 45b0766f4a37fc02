"""collector/alertstate.py and RuleEngine.restore: firing alerts survive a restart, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from megawatch.collector.alertstate import load_alerts, save_alerts
from megawatch.collector.model import Alert, AlertPhase, Severity
from megawatch.collector.rules import RuleEngine
from tests.collector.test_rules import config, firing, fleet_at

T0 = 1_700_000_000.0


def _alert(phase: AlertPhase = AlertPhase.FIRING, site: str = "a") -> Alert:
    return Alert(name="SiteOverAllocation", labels=(("fleet", "test-fleet"), ("site", site)),
                 severity=Severity.CRITICAL,
                 phase=phase, since=T0, fired_at=T0 + 60 if phase is AlertPhase.FIRING else None,
                 resolved_at=None, summary="Site site-a draws 11 MW", description="Over since ...", value=11e6)


def test_round_trip_keeps_identity_and_times(tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.json"
    alerts = [_alert(), _alert(AlertPhase.PENDING, "b"), _alert(AlertPhase.RESOLVED, "c")]
    save_alerts(path, alerts, T0 + 90)
    assert load_alerts(path) == alerts[:2]  # a resolved alert is not state
    assert [p.name for p in path.parent.iterdir()] == ["alerts.json"]  # no temp file left behind


def test_missing_file_is_no_alerts_and_a_broken_one_is_logged_not_fatal(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    assert load_alerts(tmp_path / "absent.json") == []
    for text in ("{not json", '{"version": 99, "alerts": []}', '{"version": 1, "alerts": [{"name": 1}]}', "[]"):
        path = tmp_path / "bad.json"
        path.write_text(text)
        with capture_logs() as logs:
            assert load_alerts(path) == []
        assert [e["event"] for e in logs] == ["alert_state_unreadable"], text


def test_a_crash_while_writing_leaves_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerts.json"
    save_alerts(path, [_alert()], T0)
    before = path.read_bytes()

    def crash(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_alerts(path, [], T0 + 1)
    assert path.read_bytes() == before and json.loads(before)["alerts"][0]["phase"] == "firing"
    assert [p.name for p in tmp_path.iterdir()] == ["alerts.json"]


def test_restored_firing_alert_keeps_firing_and_its_start() -> None:
    cfg = config(hold_s=300)
    engine = RuleEngine(cfg.thresholds)
    engine.restore([_alert()])
    # Still over: firing at once (no new hold time), same since and fired_at, nothing new to announce.
    over = engine.evaluate(fleet_at(cfg, T0 + 120, 11), T0 + 120)
    assert firing(over) and over.changes == ()
    (alert,) = [a for a in over.active if a.name == "SiteOverAllocation"]
    assert alert.since == T0 and alert.fired_at == T0 + 60 and "11.00 MW" in alert.summary
    # Unknown (no data yet after the restart): kept, not resolved.
    unknown = engine.evaluate(fleet_at(cfg, T0 + 130, None), T0 + 130)
    assert firing(unknown) and not [c for c in unknown.changes if c.name == "SiteOverAllocation"]
    # Really back under the line: one genuine resolve.
    under = engine.evaluate(fleet_at(cfg, T0 + 140, 9), T0 + 140)
    assert [(c.name, c.phase) for c in under.changes] == [("SiteOverAllocation", AlertPhase.RESOLVED)]


def test_without_restore_the_alert_would_wait_out_its_hold_again() -> None:
    cfg = config(hold_s=300)
    fresh = RuleEngine(cfg.thresholds).evaluate(fleet_at(cfg, T0 + 120, 11), T0 + 120)
    assert not firing(fresh)  # what a restart without a state file does: the reason the file exists
