"""Read agents over HTTP (GET /api/v1/summary): concurrent, one deadline per agent, a byte cap per reply.

Never imports agent code: the agent is another process, maybe another host and another version, and the
JSON it serves is the contract. `SUMMARY_FIELDS` is the one place that contract is spelled out here.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from megawatch.collector.config import public_url
from megawatch.collector.model import AgentObservation, AgentSummary, add
from megawatch.common.httpbody import read_capped
from megawatch.common.logs import get_logger
from megawatch.common.redact import redact_url_in

SUMMARY_PATH = "/api/v1/summary"
# Pages an agent serves: an agent URL ending in one of them was copied from a browser or a Prometheus target.
AGENT_PAGES = ("/metrics", SUMMARY_PATH, "/api/v1/miners", "/healthz")
SUMMARY_VERSION = 1
MAX_SUMMARY_BYTES = 1 << 20  # a site summary is a few hundred bytes; anything near this is not one
# Agents read at once. aiohttp's connector queues past its own limit (100); a deadline that started in that
# queue would expire there (measured with pyasic's unbounded gather), so we queue on our semaphore first.
CONCURRENCY = 64

# AgentSummary field -> path in the agent's JSON. Figures are base units (W, H/s, s); null means unknown.
SUMMARY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "agent_id": ("agent",),
    "site": ("site",),
    "cycle_ts": ("cycle", "finished_s"),
    "age_at_fetch_s": ("staleness", "age_s"),
    "hashrate_hs": ("totals", "hashrate_hs"),
    "power_firmware_w": ("totals", "power_w", "firmware"),
    "power_estimate_w": ("totals", "power_w", "estimate"),
    "miners_power_unknown": ("totals", "power_unknown_miners"),
    "miners_up": ("miners", "up"),
    "miners_down": ("miners", "down"),
    "miners_stale": ("miners", "stale"),
    "miners_total": ("miners", "configured"),
    "power_allowance_w": ("totals", "power_allowance_w"),
    "allowance_last_known": ("totals", "allowance_miners", "last_known"),
    "allowance_nameplate": ("totals", "allowance_miners", "nameplate"),
    "allowance_default": ("totals", "allowance_miners", "default"),
    "allowance_estimate_margin_w": ("totals", "allowance_w", "estimate_margin"),
    "allowance_firmware_margin_w": ("totals", "allowance_w", "firmware_margin"),
}
_MARGINS = ("allowance_estimate_margin_w", "allowance_firmware_margin_w")
_TEXT = ("agent_id", "site")
_COUNTS = ("miners_power_unknown", "miners_up", "miners_down", "miners_stale", "miners_total",
           "allowance_last_known", "allowance_nameplate", "allowance_default")
# An agent that predates the allowance names only how many miners' power it does not know: each counts at the
# agent's default unknown_miner_w (docs/accounting.md), never 0 W.
LEGACY_UNKNOWN_MINER_W = 3500.0


class SummaryError(Exception):
    """The agent could not be read, or what it said is not a summary we understand."""


class SummaryNotReady(Exception):
    """The agent answered but has not finished its first poll cycle: nothing is known yet."""


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


# An agent's figures past these are no site's: dropped as unknown, like a NaN. The largest mining sites draw
# about 1 GW; the whole Bitcoin network hashes about 1e21 H/s; one agent polls thousands of miners, not millions.
MAX_AGENT_W = 2e9
MAX_AGENT_HS = 1e20
MAX_AGENT_MINERS = 1_000_000
_LIMITS = {"power_firmware_w": MAX_AGENT_W, "power_estimate_w": MAX_AGENT_W, "hashrate_hs": MAX_AGENT_HS,
           "power_allowance_w": MAX_AGENT_W, "allowance_estimate_margin_w": MAX_AGENT_W,
           "allowance_firmware_margin_w": MAX_AGENT_W}
_POWER = ("power_firmware_w", "power_estimate_w")


def parse_summary(doc: Any, rejected: list[str] | None = None) -> AgentSummary:
    """Agent summary JSON -> AgentSummary; raises SummaryError on a wrong shape, SummaryNotReady before data.

    One bad figure costs that figure, never the agent: a field that breaks the contract (a string for a
    number, a negative, NaN or Infinity - which Python's json accepts -, more watts than any site
    draws) is read as unknown and described in `rejected`. A power figure dropped so leaves every one of
    the agent's miners counted as of unknown draw, since which of them lied is not known.
    """
    if not isinstance(doc, dict):
        raise SummaryError(f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("version")
    if version != SUMMARY_VERSION:
        raise SummaryError(f"unsupported summary version {version!r} (this collector reads {SUMMARY_VERSION})")
    problems = rejected if rejected is not None else []
    values: dict[str, Any] = {}
    dropped: set[str] = set()
    for name, path in SUMMARY_FIELDS.items():
        value, problem = _field(name, _at(doc, path))
        if problem is not None:
            problems.append(f"{'.'.join(path)}: {problem}")
            dropped.add(name)
        values[name] = value
    # A power figure that lied, or none at all from an agent past its first cycle (a summary that says nothing
    # of its draw, whatever it says of its allowance): which miners it covers is not known, so none is measured.
    power_unknown = bool(dropped.intersection(_POWER)) or all(values[n] is None for n in _POWER)
    if power_unknown:
        values["miners_power_unknown"] = values["miners_total"]
    unknown = values["miners_power_unknown"]
    if unknown is not None and (values["power_allowance_w"] is None or power_unknown):
        # No allowance given (an older agent, or one dropped above), or no power figure to trust: every miner
        # whose draw is not known counts at the default, or the agent's own allowance if that is larger.
        values["power_allowance_w"] = max(unknown * LEGACY_UNKNOWN_MINER_W, values["power_allowance_w"] or 0.0)
        values.update(allowance_default=unknown, allowance_last_known=None, allowance_nameplate=None,
                      **dict.fromkeys(_MARGINS))
    if power_unknown and not values["power_allowance_w"]:
        # Nothing to count its miners by: no figure at all, so the collector counts it as never heard from.
        values["power_allowance_w"] = None
    margins = [values.pop(n) for n in _MARGINS]
    summary = AgentSummary(**values, allowance_margin_w=add(*margins))
    if summary.cycle_ts is None and summary.power_w is None and summary.hashrate_hs is None:
        raise SummaryNotReady("no poll cycle finished yet")
    return summary


def _field(name: str, raw: Any) -> tuple[Any, str | None]:
    """(value, None) for a good field or null; (None, what is wrong) for a bad one."""
    if raw is None:
        return None, None
    if name in _TEXT:
        return (raw, None) if isinstance(raw, str) else (None, f"expected a string, got {raw!r:.40}: dropped")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        return None, f"expected a number >= 0 or null, got {raw!r:.40}: dropped as unknown"
    if name in _COUNTS:
        if raw != int(raw) or raw > MAX_AGENT_MINERS:
            return None, f"expected a whole count up to {MAX_AGENT_MINERS}, got {raw!r:.40}: dropped as unknown"
        return int(raw), None
    limit = _LIMITS.get(name)
    if limit is not None and raw > limit:
        return None, f"{raw:.6g} is more than any site gives (at most {limit:.6g}): dropped as unknown"
    return float(raw), None


@dataclass(frozen=True, slots=True)
class FetchResult:
    url: str
    summary: AgentSummary | None  # None with error=None: answered, no cycle finished yet
    error: str | None
    duration_s: float


def page_hint(url: str) -> str:
    """What to write instead when an agent URL names one of the agent's pages rather than the agent; else ''."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    page = next((p for p in AGENT_PAGES if path.endswith(p)), None)
    if page is None:
        return ""
    base = urlunsplit((parts.scheme, parts.netloc, path.removesuffix(page), "", ""))
    return (f"the agent URL ends in {page}: list the agent's base URL ({public_url(base)}); "
            f"the collector asks for {SUMMARY_PATH} itself")


class AgentReader:
    """Fetches agents' summaries through one shared ClientSession.

    Logs `agent_fetch_failed` when an agent's fetches start failing and `agent_fetch_recovered` when one
    succeeds again: one event per change, however many polls fail in between.
    """

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float,
                 clock: Callable[[], float], max_bytes: int = MAX_SUMMARY_BYTES,
                 concurrency: int = CONCURRENCY, *, auth: aiohttp.BasicAuth | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.session = session
        # Per request, not on the session: the session also posts to Alertmanager, which must not get them.
        self.auth = auth
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.clock = clock
        self.max_bytes = max_bytes
        self._slots = asyncio.Semaphore(concurrency)
        self._failing_since: dict[str, float] = {}  # agent URL -> clock time its fetches started failing
        self._rejected: dict[str, tuple[str, ...]] = {}  # agent URL -> fields its last summary broke
        self._log = get_logger()

    async def fetch_summary(self, url: str) -> AgentSummary:
        """One agent's summary within the deadline; raises SummaryError or SummaryNotReady."""
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.session.get(url + SUMMARY_PATH, allow_redirects=False, auth=self.auth,
                                            ssl=self.ssl_context if self.ssl_context is not None else True) as resp:
                    body = await read_capped(resp.content, self.max_bytes)
                    status = resp.status
        except TimeoutError:
            raise SummaryError(f"no answer within {self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SummaryError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        if status != 200:
            raise SummaryError(f"HTTP {status} from {SUMMARY_PATH}")
        if len(body) > self.max_bytes:
            raise SummaryError(f"reply larger than {self.max_bytes} bytes")
        try:
            doc = json.loads(body)  # tolerant of NaN/Infinity on purpose: parse_summary drops that field only
        except (ValueError, UnicodeDecodeError) as exc:
            raise SummaryError(f"reply is not JSON: {exc}") from None
        rejected: list[str] = []
        try:
            return parse_summary(doc, rejected)
        finally:
            self._note_rejected(url, tuple(rejected))

    async def _fetch_one(self, url: str) -> FetchResult:
        async with self._slots:  # the deadline starts once this agent's turn has come
            return await self._timed_fetch(url)

    async def _timed_fetch(self, url: str) -> FetchResult:
        started = self.clock()
        try:
            summary: AgentSummary | None = await self.fetch_summary(url)
            error = None
        except SummaryNotReady:
            summary, error = None, None
        except SummaryError as exc:
            # A client error may quote the URL; its credentials must not reach the logs or the API.
            summary, error = None, redact_url_in(str(exc), url)
            hint = page_hint(url)
            if hint:
                error = f"{error} ({hint})"
        self._note_state(url, error, started)
        return FetchResult(url, summary, error, max(0.0, self.clock() - started))

    def _note_state(self, url: str, error: str | None, at: float) -> None:
        since = self._failing_since.get(url)
        if error is not None and since is None:
            self._failing_since[url] = at
            self._log.warning("agent_fetch_failed", url=public_url(url), error=error)
        elif error is None and since is not None:
            del self._failing_since[url]
            self._log.info("agent_fetch_recovered", url=public_url(url), failing_for_s=round(at - since, 3))

    def _note_rejected(self, url: str, rejected: tuple[str, ...]) -> None:
        """Log when the set of fields an agent's summaries break changes (the rest of its data is used)."""
        if rejected == self._rejected.get(url, ()):
            return
        if rejected:
            self._rejected[url] = rejected
            self._log.warning("agent_fields_rejected", url=public_url(url), fields=list(rejected))
        else:
            del self._rejected[url]
            self._log.info("agent_fields_accepted", url=public_url(url))

    async def fetch_all(self, urls: Sequence[str]) -> list[FetchResult]:
        """Every agent at once; each has its own deadline, so one slow agent costs only its own time."""
        for gone in self._failing_since.keys() - set(urls):  # dropped by a reload: forget, do not log
            del self._failing_since[gone]
        return list(await asyncio.gather(*(self._fetch_one(u) for u in urls)))


def observe(previous: AgentObservation | None, result: FetchResult, now: float) -> AgentObservation:
    """Fold one fetch into the agent's memory: a failure keeps the last good summary, marked down."""
    prev = previous or AgentObservation(url=result.url)
    if result.error is None:
        if result.summary is None:  # answered before its first cycle: up, still nothing to count
            return replace(prev, up=True, last_error=None, consecutive_failures=0, down_since=None)
        return AgentObservation(url=result.url, summary=result.summary, fetched_at=now, up=True)
    return replace(prev, up=False, last_error=result.error, consecutive_failures=prev.consecutive_failures + 1,
                   down_since=prev.down_since if prev.down_since is not None else now)
