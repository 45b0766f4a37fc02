"""Config failures that must stay failures of the config: reloads that fail cleanly, collector settings that
cannot work refused at load, IPv6 blocks, and error lines that never show another file's contents."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from megawatch.agent.config import load_agent_config
from megawatch.cli import main
from megawatch.collector.config import load_collector_config
from megawatch.common import daemon
from megawatch.common.configfile import ConfigError
from megawatch.common.daemon import Overrides
from tests.common.test_daemon import CASES, Case, Recorder, daemon_program, write
from tests.security.test_config_bombs import BILLION_LAUGHS
from tests.security.tls import bcrypt_hash

MARKER = "S3CR3T-MARKER-7f3a"


# ---- Reload: any failure while loading is a failed reload, the running config kept -----------------------

def _bomb(path: Path) -> None:
    path.write_text(BILLION_LAUGHS)


def _recursive(path: Path) -> None:
    path.write_text("x: &x [*x]\n")


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _bad_utf8(path: Path) -> None:
    path.write_bytes(b"site: \xff\n")


def _raising(exc: BaseException) -> Callable[[Any, str], Any]:
    def load(path: str) -> Any:
        raise exc
    return load


# The file edits a SIGHUP may meet, and loader faults of every kind (standing in for bugs not yet found).
FILE_EDITS: dict[str, Callable[[Path], None]] = {
    "billion_laughs": _bomb, "recursive_alias": _recursive, "fifo": _fifo, "bad_utf8": _bad_utf8}
LOADER_FAULTS: dict[str, BaseException] = {
    "overflow": OverflowError("int too large to convert"), "recursion": RecursionError("maximum depth"),
    "memory": MemoryError(), "os": PermissionError(13, "Permission denied"),
    "unicode": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
}


def _reloader(case: Case, path: Path) -> tuple[daemon.Reloader[Any], Recorder, daemon.ReloadStatus, Any]:
    program = daemon_program(case.name)
    status, running = daemon.ReloadStatus(), Recorder()
    first = program.load(str(write(path, case)))
    return daemon.Reloader(program, first, Overrides(), status, running, clock=lambda: 7.0), running, status, first


@pytest.mark.parametrize("edit", FILE_EDITS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_a_hostile_file_on_sighup_is_a_failed_reload(case: Case, edit: str, tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    reloader, running, status, first = _reloader(case, path)
    FILE_EDITS[edit](path)
    with capture_logs() as logs:
        assert not await reloader.reload()
    assert (status.successful, status.at_s) == (False, 7.0)
    assert running.applied == [] and reloader.current is first
    [event] = logs
    assert event["event"] == "config_reload_failed" and len(event["problems"]) == 1
    assert event["problems"][0].startswith(f"{path}") and "Traceback" not in event["problems"][0]


@pytest.mark.parametrize("fault", LOADER_FAULTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_any_exception_while_loading_is_a_failed_reload(case: Case, fault: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.yaml"
    reloader, running, status, first = _reloader(case, path)
    exc = LOADER_FAULTS[fault]
    monkeypatch.setattr(reloader.program, "load", _raising(exc))
    with capture_logs() as logs:
        assert not await reloader.reload()  # returned, not raised: the SIGHUP task never dies with it
    assert not status.successful and running.applied == [] and reloader.current is first
    assert [(e["event"], e["problems"]) for e in logs] == [
        ("config_reload_failed", [f"{path}: cannot load the file: {type(exc).__name__}: {str(exc) or 'no detail'}"])]
    monkeypatch.undo()
    write(path, case)  # a good file afterwards reloads, and the gauge says so again
    with capture_logs():
        assert await reloader.reload()
    assert status.successful


# ---- Collector settings that cannot work, refused at load (so at --check-config) -------------------------

SITES = """fleet: {name: f, allocation_mw: 20}
sites:
  - id: a
    allocation_mw: 10
    agents: [http://127.0.0.1:9101]
"""


def _collector_problems(tmp_path: Path, extra: str) -> list[str]:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES + extra.replace("{dir}", str(tmp_path)).replace("{self}", str(path)))
    try:
        load_collector_config(path)
    except ConfigError as exc:
        return [str(p).removeprefix(f"{path}:") for p in exc.problems]
    return []


COLLECTOR_GAPS: dict[str, tuple[str, list[str]]] = {
    "poll_too_fast": ("poll: {interval_s: 0.001, timeout_s: 0.0005}\n",
                      ["6: poll.interval_s: expected a number >= 0.5, got 0.001"]),
    "listen_not_an_address": ("listen: {address: 'not an address!'}\n",
                              ["6: listen.address: expected an IP address or a host name such as 'localhost', "
                               "got 'not an address!'"]),
    "listen_label_too_long": (f"listen: {{address: {'a' * 64}.example}}\n",
                              ["6: listen.address: expected an IP address or a host name such as 'localhost', "
                               f"got '{'a' * 56}..."]),
    "state_file_is_the_config": ("state_file: {self}\n",
                                 ["6: state_file: is this config file itself; the collector would overwrite it with "
                                  "its alert state"]),
    "state_file_is_a_directory": ("state_file: {dir}\n",
                                  ["6: state_file: '{dir}' is a directory; expected a file name"]),
    "state_file_under_a_file": ("state_file: {dir}/sites.yaml/nope/state.json\n",
                                ["6: state_file: '{dir}/sites.yaml' is not a directory, so "
                                 "'{dir}/sites.yaml/nope' cannot hold the state"]),
}


def test_a_state_directory_the_collector_can_create_is_fine(tmp_path: Path) -> None:
    # The collector makes missing directories at its first write, as a fresh install expects.
    assert _collector_problems(tmp_path, "state_file: {dir}/new/deeper/state.json\n") == []


@pytest.mark.parametrize("name", COLLECTOR_GAPS)
def test_collector_settings_that_cannot_work_are_refused(name: str, tmp_path: Path) -> None:
    extra, expected = COLLECTOR_GAPS[name]
    assert _collector_problems(tmp_path, extra) == [e.replace("{dir}", str(tmp_path)) for e in expected]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost", "collector-1.example.", "0.0.0.0"])
def test_listen_addresses_that_are_fine(address: str, tmp_path: Path) -> None:
    assert _collector_problems(tmp_path, f"listen: {{address: '{address}'}}\nstate_file: state.json\n") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_state_file_in_a_directory_that_is_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert _collector_problems(tmp_path, f"state_file: {locked}/state.json\n") == [
        f"6: state_file: directory '{locked}' is not writable (the state is written in '{locked}' and renamed)"]


def test_a_bad_listen_address_fails_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES + "listen: {address: 'not an address!', port: 9300}\n")
    with pytest.raises(SystemExit) as info:
        main(["collector", "--check-config", str(path)])
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    assert err.startswith(f"{path}:6: listen.address: ")


# ---- IPv6 blocks: supported up to the per-entry limit ------------------------------------------------------

def test_a_small_ipv6_block_is_polled(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: s1\nminers:\n  - cidr: 'fd00::/120'\n")
    config = load_agent_config(path)
    assert len(config.miners) == 254 and config.miners[0].name == "[fd00::1]:4028"


# ---- Error lines never show another file's contents ---------------------------------------------------------

FOREIGN: dict[str, str] = {  # what a key pointing at the wrong file may find there
    "passwd": f"root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000:{MARKER}:/home/ops:/bin/sh\n",
    "shadow": f"root:$6$salt${MARKER}abcdefghijklmnop:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    "private_key": f"-----BEGIN PRIVATE KEY-----\nMIIEvQ{MARKER}AgEAMA0GCSqGSIb3DQEBAQUAB\n-----END PRIVATE KEY-----\n",
    "json_with_secret": f'{{"password": "{MARKER}", "port": 1}}\n',
    "one_line": f"{MARKER}\n",
    "list": f"- {MARKER}\n- two\n",
}
AGENT = "site: s1\nminers:\n  - address: 127.1.0.1\n"


def _web(directory: Path, foreign: Path) -> str:
    web = directory / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {foreign}, key_file: {foreign}}}\n")
    return str(web)


# (program, config text given the foreign file and the temp dir)
POINTERS: dict[str, tuple[str, Callable[[Path, Path], str]]] = {
    "agent_models_file": ("agent", lambda f, d: AGENT + f"models_file: {f}\n"),
    "agent_web_config_file": ("agent", lambda f, d: AGENT + f"web_config_file: {f}\n"),
    "agent_tls_cert_and_key": ("agent", lambda f, d: AGENT + f"web_config_file: {_web(d, f)}\n"),
    "collector_web_config_file": ("collector", lambda f, d: SITES + f"web_config_file: {f}\n"),
    "collector_tls_cert_and_key": ("collector", lambda f, d: SITES + f"web_config_file: {_web(d, f)}\n"),
}


@pytest.mark.parametrize("foreign", FOREIGN)
@pytest.mark.parametrize("pointer", POINTERS)
def test_errors_never_show_the_file_a_key_points_at(pointer: str, foreign: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "secret"
    secret.write_text(FOREIGN[foreign])
    program, text = POINTERS[pointer]
    config = tmp_path / "c.yaml"
    config.write_text(text(secret, tmp_path))
    with pytest.raises(SystemExit) as info:
        main([program, "--check-config", str(config)])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert MARKER not in err and "Traceback" not in err
    assert str(secret) in err  # the file is named, so the operator knows which key is wrong


def test_a_password_where_its_hash_belongs_is_not_shown(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ok: '{bcrypt_hash('x')}'\n  admin: {MARKER}\n")
    from megawatch.common.webconfig import load_web_config

    with pytest.raises(ConfigError) as info:
        load_web_config(web)
    assert MARKER not in str(info.value)
    assert str(info.value) == (f"{web}:3: basic_auth_users.admin: expected a bcrypt hash such as '$2b$10$...' "
                               "(not the password itself), got text (not shown: it may be a password)")
