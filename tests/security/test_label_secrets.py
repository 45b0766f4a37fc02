"""No credential reaches a metric label, an API answer or a log line, from the agent or the collector.

Pool URLs and users come from the miners (what was once typed into the firmware, passwords included);
agent and Alertmanager URLs from the collector's config (user:password@, ?token=). Each case puts the same
marker where a secret would be and renders everything each daemon exports: the marker must appear nowhere,
while the non-secret part (the pool's host, the worker name, the agent's address) still does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from megawatch.agent.config import load_agent_config
from megawatch.agent.dialects import DIALECTS
from megawatch.agent.exposition import FleetCollector, MinerCollector
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState
from megawatch.agent.web import make_app as make_agent_app
from megawatch.collector.config import Alerting
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app as make_collector_app
from megawatch.common.redact import public_url, public_user, redact_url_in
from tests.agent.dialect_cases import golden_cases, load_case
from tests.collector.fakes import FakeAgent, fake_agent
from tests.collector.helpers import make_config, make_site

SECRET = "S3cr3tPoolPass"

# (what a pool's URL and User fields say, the URL and user that may be exported)
POOL_CASES: tuple[tuple[str, str | None, str, str | None], ...] = (
    (f"stratum+tcp://acct.worker1:{SECRET}@pool.example:3333", "acct.worker1",
     "stratum+tcp://pool.example:3333", "acct.worker1"),
    (f"stratum+tcp://pool.example:3333?token={SECRET}", f"acct.worker1:{SECRET}",
     "stratum+tcp://pool.example:3333", "acct.worker1"),
    (f"pool.example:3333/?key={SECRET}&x=1", f"acct.worker1,{SECRET}", "pool.example:3333/", "acct.worker1"),
    (f"acct:{SECRET}@pool.example:3333", None, "pool.example:3333", None),
    (f"stratum2+tcp://acct:p@ss/{SECRET}?@pool.example:3334#x", "acct.worker1",
     "stratum2+tcp://pool.example:3334", "acct.worker1"),
    (f"stratum+ssl://pool.example:3335#password={SECRET}", "acct.worker1", "stratum+ssl://pool.example:3335",
     "acct.worker1"),
)


@pytest.mark.parametrize(("url", "user", "url_out", "user_out"), POOL_CASES)
def test_public_url_and_user(url: str, user: str | None, url_out: str, user_out: str | None) -> None:
    assert public_url(url) == url_out
    assert (None if user is None else public_user(user)) == user_out


def test_error_text_loses_the_urls_secrets() -> None:
    url = f"http://admin:{SECRET}@127.0.0.1:9100/x?token={SECRET}2"
    text = redact_url_in(f"InvalidURL: {url}/api/v1/summary", url)
    assert SECRET not in text and "127.0.0.1:9100" in text


def _dialect_replies() -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """One recorded reply set per dialect, every pool's URL and User replaced by a secret-bearing case."""
    for dialect in sorted(DIALECTS):
        recorded = [load_case(case) for case in golden_cases(dialect)]
        replies = copy.deepcopy(next(r for r in recorded if r.get("pools", {}).get("POOLS")))
        pools = replies["pools"]["POOLS"]
        for i, pool in enumerate(pools):
            url, user, _, _ = POOL_CASES[i % len(POOL_CASES)]
            pool["URL"] = url
            if user is None:
                pool.pop("User", None)
            else:
                pool["User"] = user
        yield dialect, replies


class _Replies:
    """The miners' side: each address answers its dialect's recorded replies."""

    def __init__(self, by_host: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.by_host = by_host

    async def __call__(self, host: str, commands: tuple[str, ...], **_: object) -> Any:
        from tests.agent.test_poller import Result

        replies = self.by_host[host]
        return Result({c: replies[c] for c in commands if c in replies})


async def test_agent_exports_no_pool_secret(tmp_path: Path) -> None:
    cases = dict(_dialect_replies())
    hosts = {dialect: f"127.9.0.{i + 1}" for i, dialect in enumerate(cases)}
    miners = "".join(f"  - {{address: {hosts[d]}, dialect: {d}}}\n" for d in cases)
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: s1\nminers:\n{miners}exposition: {{all_pools: true}}\n")
    config = load_agent_config(path)
    state = FleetState(config.site, len(config.miners))
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    with capture_logs() as logs:
        poller = Poller(config, state, query=_Replies({hosts[d]: r for d, r in cases.items()}), deadlines=object())
        snapshot = await poller.poll_once()
        assert snapshot.totals.up == len(cases), [(m.name, m.last_error) for m in snapshot.miners]
        reference = CollectorRegistry()
        reference.register(MinerCollector(state, config.exposition))
        exported = [generate_latest(reference).decode()]
        async with TestClient(TestServer(make_agent_app(config, state, registry))) as client:
            for page in ("/metrics", "/api/v1/miners", "/api/v1/summary", "/healthz"):
                resp = await client.get(page)
                assert resp.status == 200, page
                exported.append(await resp.text())
    exported.append(repr(logs))
    exported.append(repr(snapshot))  # what every later export is made from
    for text in exported:
        assert SECRET not in text
    metrics = exported[1]
    assert 'url="stratum+tcp://pool.example:3333"' in metrics and 'user="acct.worker1"' in metrics


async def test_collector_exports_no_agent_url_secret() -> None:
    async with (fake_agent(FakeAgent("a")) as a1, fake_agent(FakeAgent("a")) as a2,
                aiohttp.ClientSession() as session):
        host1, host2 = a1.url.removeprefix("http://"), a2.url.removeprefix("http://")
        agents = (f"http://admin:{SECRET}@{host1}",  # answers, with the credentials as basic auth
                  f"http://{host2}/?token={SECRET}",  # answers 404 at that path: an error that names it
                  f"http://admin:{SECRET}@127.0.0.1:1/x?key={SECRET}")  # nobody listens
        site = make_site("a")
        config = make_config(type(site)(**{**{f: getattr(site, f) for f in site.__slots__}, "agents": agents}))
        config = type(config)(**{**{f: getattr(config, f) for f in config.__slots__},
                                 "alerting": Alerting(alertmanager_urls=(f"http://am:{SECRET}@127.0.0.1:1",))})
        with capture_logs() as logs:
            service = CollectorService(config, session, "http://127.0.0.1:9300/api/v1/alerts")
            await service.poll_once()
            await service.poll_once()
            exported = []
            async with TestClient(TestServer(make_collector_app(service))) as client:
                for page in ("/metrics", "/api/v1/sites", "/api/v1/alerts", "/healthz", "/"):
                    resp = await client.get(page)
                    exported.append(await resp.text())
        exported.append(repr(logs))
    assert a1.requests >= 1  # the credentials in the URL still work; only what is exported loses them
    for text in exported:
        assert SECRET not in text
    assert f'agent="http://{host1}"' in exported[0] and f'agent="http://{host2}/"' in exported[0]
