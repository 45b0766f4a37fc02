"""`python -m bench.page`: the status page's size and time to first render, at 20 sites and 500 agents.

A real collector process reads 500 agent summaries (bench/summaries.py, one process) over 20 sites; a
headless Chromium (Debian's chromium + chromedriver, through selenium) opens its page several times, each a
fresh navigation, and reads when the first figures were on screen (the page's own
`megawatch:first-render` performance mark, from navigation start). Beside it: the same page for a
collector of one site and one agent, and the raw fetch of the JSON the page polls, with no browser.

Prints a table; `--json FILE` writes the figures too. Without chromium the sizes are still measured and
the render times are reported as not measured (never as 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.collector_phase import BASE_ADDRESS, _sites_yaml
from bench.procs import BenchError, Proc, free_port, http_get, megawatch_command, wait_for
from bench.summaries import agent_url

AGENTS = 500
SITES = 20
LOADS = 5
FETCHES = 20
FLEET_PAGE_FILES = ("fleet.html", "page.js", "fleet.js", "page.css", "favicon.svg")
# As in the e2e tests: without the background-networking flags Chromium dials out at start.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-dev-shm-usage", "--window-size=1280,900")


@contextmanager
def collector(scratch: Path, name: str, config: str) -> Iterator[str]:
    """A collector process with `config`, yielded once its first cycle has ended: its base URL."""
    path = scratch / f"{name}.yaml"
    path.write_text(config)
    port = free_port()
    proc = Proc(name, [*megawatch_command(), "collector", "--config", str(path), "--listen", f"127.0.0.1:{port}",
                       "--log-format", "json"], scratch / f"{name}.log", None)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{name} /healthz", lambda: True if http_get(url + "/healthz", 2)[0] == 200 else None, 60, proc)
        yield url
    finally:
        proc.stop()


def page_bytes(url: str) -> dict[str, int]:
    sizes = {}
    for name in FLEET_PAGE_FILES:
        status, body, _ = http_get(url + ("/" if name == "fleet.html" else f"/static/{name}"))
        if status != 200:
            raise BenchError(f"{name}: HTTP {status}")
        sizes[name] = len(body)
    return sizes


def fetch_times(url: str, count: int = FETCHES) -> list[float]:
    times = []
    for _ in range(count):
        status, _, seconds = http_get(url)
        if status != 200:
            raise BenchError(f"{url}: HTTP {status}")
        times.append(seconds)
    return times


class Chromium:
    def __init__(self, profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        service = Service(executable_path=shutil.which("chromedriver"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(30)

    def first_render_ms(self, url: str, loads: int = LOADS) -> list[float]:
        """Milliseconds from navigation start to the first figures on screen, one fresh load each."""
        out = []
        for _ in range(loads + 1):  # the first load warms the browser's own start-up, not the page
            self.driver.get("about:blank")
            self.driver.get(url)
            deadline = time.monotonic() + 30
            mark = None
            while mark is None:
                mark = self.driver.execute_script(
                    "const m = performance.getEntriesByName('megawatch:first-render'); "
                    "return m.length ? m[0].startTime : null")
                if mark is None:
                    if time.monotonic() > deadline:
                        raise BenchError(f"{url}: no first render within 30 s")
                    time.sleep(0.02)
            out.append(float(mark))
        return out[1:]

    def quit(self) -> None:
        self.driver.quit()


def measure(scratch: Path, agents: int = AGENTS, sites: int = SITES, say: Any = print) -> dict[str, Any]:
    port = free_port()
    say(f"[page] {agents} agent summaries of {sites} sites on {BASE_ADDRESS}.. port {port}")
    server = Proc("summaries", [sys.executable, "-m", "bench.summaries", "--agents", str(agents), "--sites",
                                str(sites), "--base-address", BASE_ADDRESS, "--port", str(port), "--scratch",
                                str(scratch / "agents")], scratch / "summaries.log", None, pipe_stdout=True)
    browser = None
    try:
        line = server.read_line(120)
        if line != f"ready {agents}":
            raise BenchError(f"summaries server: {line!r}; {server.log_tail()}")
        have_browser = bool(shutil.which("chromium") and shutil.which("chromedriver"))
        if have_browser:
            browser = Chromium(scratch / "chromium")
        result: dict[str, Any] = {"agents": agents, "sites": sites, "loads": LOADS, "fetches": FETCHES,
                                  "browser": "chromium" if have_browser else None}
        big = _sites_yaml(agents, sites, port)  # the collector phase's fleet, with more agents
        one = (f"fleet: {{name: bench-one, allocation_mw: 100}}\nsites:\n  - id: plant-00\n"
               f"    allocation_mw: 100\n    agents: [{agent_url(BASE_ADDRESS, 0, port)}]\n"
               "poll: {interval_s: 15, timeout_s: 5}\n")
        for name, config in (("fleet", big), ("one_site", one)):
            with collector(scratch, f"collector-{name}", config) as url:
                overview = http_get(url + "/api/v1/overview")[1]
                sites_body = http_get(url + "/api/v1/sites")[1]
                shown = len(json.loads(overview)["sites"])
                entry: dict[str, Any] = {
                    "sites_shown": shown, "page_bytes": page_bytes(url), "overview_bytes": len(overview),
                    "api_sites_bytes": len(sites_body),
                    "overview_fetch_ms": [t * 1000 for t in fetch_times(url + "/api/v1/overview")],
                    "first_render_ms": browser.first_render_ms(url + "/") if browser is not None else None,
                }
                result[name] = entry
                say(f"[page] {name}: {shown} sites, first render "
                    + (f"{statistics.median(entry['first_render_ms']):.0f} ms" if browser else "not measured"))
        return result
    finally:
        if browser is not None:
            browser.quit()
        server.stop()


def report(r: dict[str, Any]) -> str:
    def med(values: list[float] | None) -> str:
        return "not measured (no chromium)" if values is None else f"{statistics.median(values):7.1f} ms"

    fleet, one = r["fleet"], r["one_site"]
    html_js_css = sum(fleet["page_bytes"].values())
    lines = [
        f"status page, {r['sites']} sites and {r['agents']} agents, beside 1 site and 1 agent "
        f"(medians of {r['loads']} loads, {r['fetches']} fetches)",
        f"  page (HTML+JS+CSS+icon, uncompressed)   {html_js_css:>9,} B   "
        + ", ".join(f"{k} {v:,}" for k, v in fleet["page_bytes"].items()),
        f"  /api/v1/overview, one poll               {fleet['overview_bytes']:>9,} B   "
        f"(1 site: {one['overview_bytes']:,} B; /api/v1/sites with every agent: {fleet['api_sites_bytes']:,} B)",
        f"  first render, {r['sites']} sites                    {med(fleet['first_render_ms'])}",
        f"  first render, 1 site (baseline)          {med(one['first_render_ms'])}",
        f"  raw fetch of /api/v1/overview, no browser {statistics.median(fleet['overview_fetch_ms']):6.1f} ms"
        f"   (1 site: {statistics.median(one['overview_fetch_ms']):.1f} ms)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=AGENTS)
    p.add_argument("--sites", type=int, default=SITES)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.sites <= args.agents <= 5000:
        p.error("expected 1 <= sites <= agents <= 5000")
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        try:
            result = measure(Path(tmp), args.agents, args.sites)
        except BenchError as exc:
            print(f"bench.page: {exc}", file=sys.stderr)
            return 1
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
