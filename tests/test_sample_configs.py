"""The shipped sample configs fit together: sites.yaml and prometheus.yml name the ports the sample agents
listen on, and the sample agents poll the miners configs/sim/small.yaml serves.

Run together, a mismatch does not fail loudly: the collector shows the site as `no_data` and Prometheus a down
target. tests/e2e/test_sample_configs_e2e.py runs them; this is the cheap check of the same wiring.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.collector.config import Site, load_collector_config
from megawatch.simulator.config import load_fleet_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def sample_agents() -> dict[str, AgentConfig]:
    return {path.name: load_agent_config(path) for path in sorted(CONFIGS.glob("agent*.yaml"))}


def agents_of_site(site: str) -> dict[tuple[str, int], str]:
    """(listen address, port) -> file name of every sample agent config for `site`."""
    return {(c.http.listen, c.http.port): name for name, c in sample_agents().items() if c.site == site}


def endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


def prometheus_targets(job: str) -> list[tuple[str, dict[str, str]]]:
    doc = yaml.safe_load((CONFIGS / "prometheus" / "prometheus.yml").read_text())
    (scrape,) = [s for s in doc["scrape_configs"] if s["job_name"] == job]
    return [(target, static.get("labels", {})) for static in scrape["static_configs"] for target in static["targets"]]


SITES = load_collector_config(CONFIGS / "sites.yaml")


@pytest.mark.parametrize("site", SITES.sites, ids=lambda s: s.id)
def test_every_agent_url_in_sites_yaml_is_a_sample_agent_of_that_site(site: Site) -> None:
    listed = {endpoint(url) for url in site.agents}
    samples = agents_of_site(site.id)
    assert samples, f"no configs/agent*.yaml has site: {site.id}"
    assert listed == set(samples), (
        f"configs/sites.yaml lists {sorted(listed)} for {site.id}; its sample agents listen on {samples}")


def test_every_prometheus_agent_target_is_a_sample_agent_of_its_site() -> None:
    targets = prometheus_targets("megawatch-agent")
    assert targets
    by_site: dict[str, set[tuple[str, int]]] = {}
    for target, labels in targets:
        assert "site" in labels, f"prometheus.yml target {target} has no site label"
        by_site.setdefault(labels["site"], set()).add(endpoint(target))
    assert set(by_site) == {s.id for s in SITES.sites}
    for site, listed in by_site.items():
        assert listed == set(agents_of_site(site)), f"prometheus.yml targets for {site}: {sorted(listed)}"


def test_prometheus_scrapes_the_collector_where_sites_yaml_makes_it_listen() -> None:
    (target, _), = prometheus_targets("megawatch-collector")
    assert endpoint(target) == (SITES.listen_address, SITES.listen_port)


def test_sample_agents_poll_exactly_the_miners_the_small_simulated_fleet_serves() -> None:
    fleet = {site.id: site for site in load_fleet_config(CONFIGS / "sim" / "small.yaml").sites}
    for site in SITES.sites:
        for name in agents_of_site(site.id).values():
            agent = sample_agents()[name]
            polled = {(m.address, m.port) for m in agent.miners}
            assert polled == set(fleet[site.id].endpoints()), f"{name} does not poll site {site.id} of small.yaml"
