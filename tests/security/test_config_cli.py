"""Bad config files through the real CLI: `megawatch agent|collector --check-config FILE`.

Every case, the existing ones (tests/config_cases/*.yaml for the agent with their `# expect:` lines,
tests/collector/config_cases with the table in test_collector_config.py) and the new ones below, must give
exit code 2, nothing on stdout, one line per problem naming file:line, the dotted key and what is wrong,
and no traceback. The loaders' own tests check the wording; this checks what an operator sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from megawatch.cli import main
from tests.collector.test_collector_config import BAD as COLLECTOR_BAD
from tests.collector.test_collector_config import CASES as COLLECTOR_CASES
from tests.security.tls import bcrypt_hash

ROOT = Path(__file__).resolve().parents[2]
AGENT_CASES = ROOT / "tests" / "config_cases"

SITES = """fleet: {name: f, allocation_mw: 20}
sites:
  - id: a
    allocation_mw: 10
    agents: [http://127.0.0.1:9101]
"""
# New cases, (program, file text, the error lines expected with {path} for the file): the kinds of mistake
# users make (wrong types, unknown keys, missing keys, duplicate miners, overlapping ranges, negative MW) where the
# existing cases do not cover them, and the newer settings (web config, state file, agent client).
NEW: dict[str, tuple[str, str, list[str]]] = {
    "collector_negative_site_mw": ("collector", SITES.replace("allocation_mw: 10", "allocation_mw: -10"),
                                   ["{path}:4: sites[0].allocation_mw: expected a number > 0, got -10"]),
    "collector_negative_fleet_mw": ("collector", SITES.replace("allocation_mw: 20", "allocation_mw: -20"),
                                    ["{path}:1: fleet.allocation_mw: expected a number > 0, got -20"]),
    "collector_negative_aux_mw": ("collector", SITES + "    aux_mw: -0.5\n",
                                  ["{path}:6: sites[0].aux_mw: expected a number >= 0, got -0.5"]),
    "collector_wrong_types": ("collector", SITES + "    pue: high\nlisten: {address: 127.0.0.1, port: '9300'}\n"
                              "poll: {interval_s: [15]}\n",
                              ["{path}:6: sites[0].pue: expected a number >= 1 <= 3, got 'high'",
                               "{path}:7: listen.port: expected an integer >= 0 <= 65535, got '9300'",
                               "{path}:8: poll.interval_s: expected a number >= 0.5, got a list"]),
    "collector_missing_sites": ("collector", "fleet: {name: f, allocation_mw: 20}\n",
                                ["{path}:1: sites: required key is missing"]),
    "collector_missing_site_keys": ("collector", "fleet: {name: f, allocation_mw: 20}\nsites:\n  - id: a\n",
                                    ["{path}:3: sites[0].allocation_mw: required key is missing",
                                     "{path}:3: sites[0].agents: required key is missing"]),
    "collector_unknown_nested_key": ("collector", SITES + "    allocaton_mw: 3\n",
                                     ["{path}:6: sites[0].allocaton_mw: unknown key (did you mean 'allocation_mw'?)"]),
    "collector_state_file_type": ("collector", SITES + "state_file: [a]\n",
                                  ["{path}:6: state_file: expected a non-empty string, got a list"]),
    "collector_agent_client_half": ("collector", SITES + "agent_client: {username: prometheus}\n",
                                    ["{path}:6: agent_client.password_file: required with username"]),
    "collector_web_config_missing": ("collector", SITES + "web_config_file: nope.yml\n",
                                     ["{dir}/nope.yml: cannot read file: No such file or directory"]),
    "agent_web_config_missing": ("agent", "site: s1\nminers:\n  - address: 127.1.0.1\nweb_config_file: nope.yml\n",
                                 ["{dir}/nope.yml: cannot read file: No such file or directory"]),
    "agent_negative_and_wrong_types": ("agent", ("site: s1\nminers:\n  - address: 127.1.0.1\n"
                                       "poll: {interval_s: -15, request_timeout_s: fast}\n"),
                                       ["{path}:4: poll.interval_s: expected a number >= 1, got -15",
                                        "{path}:4: poll.request_timeout_s: expected a number > 0, got 'fast'"]),
    "agent_duplicate_in_range": ("agent", ("site: s1\nminers:\n  - range: 127.1.0.1-127.1.0.9\n"
                                 "  - address: 127.1.0.4\n"),
                                 [("{path}:4: miners[1].address: 127.1.0.4 port 4028 is already listed by "
                                  "miners[0].range (range 127.1.0.1-127.1.0.9)")]),
    "agent_overlapping_cidrs": ("agent", "site: s1\nminers:\n  - cidr: 127.1.0.0/24\n  - cidr: 127.1.0.128/25\n",
                                [("{path}:4: miners[1].cidr: 127.1.0.129 port 4028 is already listed by "
                                 "miners[0].cidr (cidr 127.1.0.0/24)")]),
    "agent_miner_not_a_mapping": ("agent", "site: s1\nminers:\n  - 127.1.0.1\n",
                                  ["{path}:3: miners[0]: expected a mapping, got '127.1.0.1'"]),
}


def _check_config(program: str, path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([program, "--check-config", str(path), *extra])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _assert_clean_failure(code: int, out: str, err: str, expected: list[str]) -> None:
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err
    assert err.splitlines() == expected


def _agent_expected(case: Path) -> list[str]:
    lines = [ln.removeprefix("# expect: ") for ln in case.read_text().splitlines() if ln.startswith("# expect: ")]
    return [ln.replace("{path}", str(case)).replace("{dir}", str(case.parent)) for ln in lines]


@pytest.mark.parametrize("case", sorted(AGENT_CASES.glob("*.yaml")), ids=lambda p: f"agent-{p.stem}")
def test_existing_agent_cases_through_the_cli(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_clean_failure(*_check_config("agent", case, capsys), _agent_expected(case))


@pytest.mark.parametrize("case", sorted(COLLECTOR_BAD), ids=lambda c: f"collector-{c}")
def test_existing_collector_cases_through_the_cli(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = COLLECTOR_CASES / f"{case}.yaml"
    line, expected = COLLECTOR_BAD[case]
    code, out, err = _check_config("collector", path, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert any(x.startswith(f"{path}:{line}: {expected}") for x in lines), lines
    assert all(x.startswith(f"{path}:") for x in lines), lines


@pytest.mark.parametrize("case", sorted(NEW))
def test_new_cases_through_the_cli(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    program, text, expected = NEW[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    lines = [e.replace("{path}", str(path)).replace("{dir}", str(tmp_path)) for e in expected]
    _assert_clean_failure(*_check_config(program, path, capsys), lines)


@pytest.mark.parametrize("program", ["agent", "collector"])
def test_a_bad_web_config_file_fails_the_check_too(program: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ok: '{bcrypt_hash('x')}'\n  bad: hunter2\n")
    config = ROOT / "configs" / ("agent.yaml" if program == "agent" else "sites.yaml")
    code, out, err = _check_config(program, config, capsys, "--web.config.file", str(web))
    _assert_clean_failure(code, out, err, [
        (f"{web}:3: basic_auth_users.bad: expected a bcrypt hash such as '$2b$10$...' (not the password itself), "
        "got text (not shown: it may be a password)")])


@pytest.mark.parametrize("program, case", [("agent", AGENT_CASES / "overlap.yaml"),
                                           ("collector", COLLECTOR_CASES / "oversubscribed.yaml")])
def test_exit_code_2_at_the_process_level(program: str, case: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "megawatch.cli", program, "--check-config", str(case)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{case}:") and len(proc.stderr.splitlines()) == 1
