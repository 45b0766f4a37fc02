"""The wheel, installed (not editable) into a fresh venv, runs agent, collector and simulator from any folder.

What a user gets from `pip install .`: one `megawatch` namespace at the top of site-packages, the model table
inside it, and a `megawatch` command that needs nothing from the repo. The fresh venv sees the test venv's
dependencies through a .pth file (no network), but not its editable megawatch: a path a .pth file adds is
not a site dir, so the editable install's own .pth (the finder that maps megawatch to this repo) never runs
there. The test asserts that too, or it would prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# Not the product: what a checkout has beside it (virtualenvs, caches, build output of earlier builds).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", ".demo", "results")


def clean_env() -> dict[str, str]:
    # No PYTHONPATH and friends from the test run: the fresh venv must stand on its own.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


def run(argv: list[str], cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout: an in-tree build would leave build/ in the repo, and a
    stale build/lib would ship modules that no longer exist in the source."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp / "dist"
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "--quiet", "-w", str(out), str(source)], cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("megawatch-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with only the wheel installed; returns its bin/ directory."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(home)
    python = home / "bin" / "python"
    proc = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                "--quiet", str(wheel)], cwd=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=home).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "test-venv-dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    return home / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working folder with nothing of the repo in it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_the_wheel_installs_one_megawatch_namespace_with_the_model_table(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    top = {name.split("/")[0] for name in names}
    (dist_info,) = [t for t in top if t.endswith(".dist-info")]
    assert top == {"megawatch", dist_info}, sorted(top)
    assert "megawatch/agent/models.yaml" in names
    for package in ("agent", "collector", "common", "simulator"):
        assert f"megawatch/{package}/__init__.py" in names


def test_the_fresh_venv_imports_the_installed_megawatch_not_the_checkout(fresh: Path, elsewhere: Path) -> None:
    probe = ("import json, sys, megawatch, megawatch.agent.modeltable as m; "
             "print(json.dumps({'file': megawatch.__file__, 'models': str(m.DEFAULT_MODELS_PATH), "
             "'editable': [n for n in sys.modules if 'editable' in n]}))")
    proc = run([str(fresh / "python"), "-c", probe], cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    venv_root = fresh.parent.resolve()
    assert Path(seen["file"]).resolve().is_relative_to(venv_root), seen
    assert Path(seen["models"]).resolve().is_relative_to(venv_root), seen
    assert seen["editable"] == [], "the test venv's editable finder is active in the fresh venv"


@pytest.mark.parametrize("module", ["common", "agent", "collector", "simulator"])
def test_the_folders_are_not_top_level_modules(fresh: Path, elsewhere: Path, module: str) -> None:
    proc = run([str(fresh / "python"), "-c", f"import {module}"], cwd=elsewhere)
    assert proc.returncode != 0 and f"No module named '{module}'" in proc.stderr, proc.stdout + proc.stderr


def test_check_config_of_the_sample_configs_from_another_folder(fresh: Path, elsewhere: Path) -> None:
    # Copies: nothing of the repo is reachable, so the model table can only come from the wheel.
    for name in ("agent.yaml", "sites.yaml"):
        shutil.copy(ROOT / "configs" / name, elsewhere / name)
    for command, config in (("agent", "agent.yaml"), ("collector", "sites.yaml")):
        proc = run([str(fresh / "megawatch"), command, "--check-config", config], cwd=elsewhere)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and out.startswith("ok: "), f"megawatch {command}: {out}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, procs: dict[str, subprocess.Popen[bytes]],
             logs: Path) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{(logs / f'{name}.log').read_text()}"
        try:
            value = probe()
        except OSError:  # not listening yet (urllib's URLError is an OSError)
            value = None
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.2)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


@pytest.fixture
def started(elsewhere: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield procs
    finally:
        for proc in reversed(procs.values()):
            proc.terminate()
        for proc in reversed(procs.values()):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in sorted(elsewhere.glob("*.log")):
            print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")  # shown if the test failed


def test_simulate_agent_and_collector_run_from_the_wheel(fresh: Path, elsewhere: Path,
                                                         started: dict[str, subprocess.Popen[bytes]]) -> None:
    # Miners on a block of addresses of our own (per test process), the control and HTTP ports free ones.
    base = f"127.66.{os.getpid() % 250}"
    control, agent_port, collector_port = free_port(), free_port(), free_port()
    (elsewhere / "fleet.yaml").write_text(f"""\
seed: 1
tick_s: 5
control: {{host: 127.0.0.1, port: {control}}}
sites:
  - id: wheel-site
    address: {base}.1
    groups:
      - {{count: 2, model: Whatsminer M30S++, dialect: btminer}}
      - {{count: 2, model: Antminer S19, dialect: cgminer}}
""")
    (elsewhere / "agent.yaml").write_text(f"""\
site: wheel-site
miners:
  - range: {base}.1-{base}.4
poll: {{interval_s: 1, connect_timeout_s: 0.5, request_timeout_s: 0.8, jitter_s: 0, stale_grace_s: 3}}
http: {{listen: 127.0.0.1, port: {agent_port}}}
log: {{format: json, level: info}}
""")
    (elsewhere / "sites.yaml").write_text(f"""\
fleet: {{name: wheel, allocation_mw: 2}}
sites:
  - id: wheel-site
    allocation_mw: 1
    agents: [http://127.0.0.1:{agent_port}]
alerting:
  alertmanager_urls: [http://127.0.0.1:{free_port()}]
listen: {{address: 127.0.0.1, port: {collector_port}}}
poll: {{interval_s: 1, timeout_s: 0.8}}
""")
    def start(command: str, config: str) -> None:
        with (elsewhere / f"{command}.log").open("wb") as log:
            started[command] = subprocess.Popen([str(fresh / "megawatch"), command, "--config", config],
                                                cwd=elsewhere, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL)

    start("simulate", "fleet.yaml")
    wait_for(lambda: get_json(f"http://127.0.0.1:{control}/api/v1/truth"), 20, "the simulator", started, elsewhere)
    # Frozen: the miners answer the same figures on every poll, so the totals can be checked against truth.
    freeze = urllib.request.Request(f"http://127.0.0.1:{control}/api/v1/clock", data=b'{"freeze": true}',
                                    headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(freeze, timeout=5) as resp:
        assert resp.status == 200
    start("agent", "agent.yaml")
    start("collector", "sites.yaml")

    def site_with_data() -> dict[str, Any] | None:
        body = get_json(f"http://127.0.0.1:{collector_port}/api/v1/sites")
        (site,) = body["sites"]
        return site if site["status"] == "ok" and site["miners_up"] == 4 else None

    site = wait_for(site_with_data, 30, "the collector to show wheel-site with data", started, elsewhere)
    truth = get_json(f"http://127.0.0.1:{control}/api/v1/truth")["sites"]["wheel-site"]
    assert site["id"] == "wheel-site" and site["miners_total"] == 4
    # The cgminer S19s report no power: their share is the model table's estimate, so the table was loaded.
    assert site["power_estimate_w"] > 0 and site["power_firmware_w"] > 0
    assert site["miner_power_w"] == pytest.approx(truth["power_w_reported"] + truth["power_w_estimable"], rel=0.01)
    # The status page and its scripts are package data: an installed collector serves them, not a checkout.
    for page, kind in (("/", "text/html"), ("/static/page.js", "javascript")):
        with urllib.request.urlopen(f"http://127.0.0.1:{collector_port}{page}", timeout=5) as resp:
            assert resp.status == 200 and kind in resp.headers["Content-Type"], (page, resp.headers["Content-Type"])
