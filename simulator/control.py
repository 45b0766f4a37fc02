"""The simulator's control endpoint (aiohttp, loopback only): ground truth, miners, load and faults.

GET /api/v1/truth, GET /api/v1/miners, POST /api/v1/sites/{site}/load {"factor": 1.2},
POST /api/v1/faults {"site": S, "fault": K, "fraction": 0.05, <params>} or {"miners": [...], "fault": K},
DELETE /api/v1/faults, POST /api/v1/clock {"freeze": true, "advance": 1},
POST /api/v1/swaps {"miners": [...], "model": M} (another unit at those addresses: new serial and MAC),
POST /api/v1/meters/{site}/fault {"fault": K, <params>}, DELETE /api/v1/meters/{site}/fault,
POST /api/v1/meters/{site}/extra_load {"kw": 50}.
Bad requests get a 4xx JSON error naming the problem; nothing a client sends can crash the fleet.

A web page in the operator's browser can reach loopback too. So every request must name a loopback Host
(a DNS-rebound name is refused, 421), a request with a body must be `application/json` (a cross-origin page
can send text/plain or a form without asking; JSON makes the browser ask first, and we never say yes: 415),
and when a token is set every request must carry `Authorization: Bearer <token>` (401).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from megawatch.agent.modeltable import load_model_table
from megawatch.simulator.config import is_loopback
from megawatch.simulator.faults import PARAMETERS, Fault, make_fault
from megawatch.simulator.fleet import (
    Fleet,
    Planned,
    finish_truth,
    resolve_names,
    select_site_fraction,
)
from megawatch.simulator.meter import METER_FAULTS, MeterSet, make_meter_fault
from megawatch.simulator.replies import VENDORS

MAX_LOAD_FACTOR = 10.0
MAX_EXTRA_LOAD_KW = 1e7  # as the fleet file allows


class Backend(Protocol):
    """What the endpoint drives: one in-process Fleet, or a pool of worker processes."""

    plan: list[Planned]
    seed: int
    site_ids: tuple[str, ...]
    meters: MeterSet | None

    def truth_key(self) -> object: ...  # changes whenever the truth may have: tick, load, faults
    async def truth(self) -> dict[str, Any]: ...
    async def miners(self) -> list[dict[str, Any]]: ...
    async def set_load(self, site: str, factor: float) -> None: ...
    async def set_fault(self, indices: list[int], fault: Fault | None) -> int: ...
    async def clear_faults(self) -> int: ...
    async def clock(self, freeze: bool | None, advance: int) -> dict[str, Any]: ...
    async def swap(self, indices: list[int], model: str | None) -> int: ...


class LocalBackend:
    """A Fleet in this process."""

    def __init__(self, fleet: Fleet, plan: list[Planned]) -> None:
        self.fleet = fleet
        self.plan = plan
        self.seed = fleet.seed
        self.site_ids = tuple(fleet.sites)
        self.meters: MeterSet | None = None

    def truth_key(self) -> object:
        return (self.fleet.clock.tick(), self.fleet.generation)

    async def truth(self) -> dict[str, Any]:
        return finish_truth(self.fleet.site_sums(), self.fleet.clock.tick())

    async def miners(self) -> list[dict[str, Any]]:
        return self.fleet.miner_rows()

    async def set_load(self, site: str, factor: float) -> None:
        self.fleet.set_load(site, factor)

    async def set_fault(self, indices: list[int], fault: Fault | None) -> int:
        count = 0
        for index in indices:
            miner = self.fleet.by_index.get(index)
            if miner is not None:
                self.fleet.set_fault(miner, fault)
                count += 1
        return count

    async def clear_faults(self) -> int:
        return self.fleet.clear_faults()

    async def clock(self, freeze: bool | None, advance: int) -> dict[str, Any]:
        return self.fleet.clock.apply(freeze, advance)

    async def swap(self, indices: list[int], model: str | None) -> int:
        spec = None
        if model is not None:
            spec = load_model_table().lookup(model)
            if spec is None:
                raise BadRequest(f"model: {model!r} is not in the model table")
        miners = [m for i in indices if (m := self.fleet.by_index.get(i)) is not None]
        for miner in miners:
            vendors = VENDORS.get(miner.identity.dialect)
            if spec is not None and vendors and not spec.name.startswith(vendors):
                raise BadRequest(f"model: {spec.name!r} does not run {miner.identity.dialect}")
        for miner in miners:
            self.fleet.swap_miner(miner, spec)
        return len(miners)


BACKEND = web.AppKey("backend", Backend)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)


def _loopback_host(header: str | None) -> bool:
    """Whether a Host header names this machine: localhost, a 127.x address or [::1], any port."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard(token: str | None) -> Any:
    expected = None if token is None else f"Bearer {token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _loopback_host(request.headers.get("Host")):
            return web.json_response({"error": "the Host header must name a loopback address"}, status=421)
        if expected is not None and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), expected):
            return web.json_response({"error": "a bearer token is required (control.token)"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="megawatch-simulator"'})
        has_body = request.body_exists or request.method == "POST"
        if has_body and request.content_type != "application/json":
            return web.json_response({"error": "the request body must be Content-Type: application/json"},
                                     status=415)
        return await handler(request)

    return guard


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


async def get_truth(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    if backend.meters is None:
        return web.json_response(await backend.truth())
    return web.json_response(backend.meters.add_rows(await backend.meters.truth()))


def _meter_of(request: web.Request) -> tuple[MeterSet, str]:
    backend = request.app[BACKEND]
    site = request.match_info["site"]
    meters = backend.meters.meters if backend.meters is not None else {}
    if site not in meters:
        raise BadRequest(f"site {site!r} has no meter (metered: {', '.join(meters) or 'none'})", 404)
    assert backend.meters is not None
    return backend.meters, site


async def post_meter_fault(request: web.Request) -> web.Response:
    meters, site = _meter_of(request)
    body = await _body(request)
    kind = body.get("fault")
    if not isinstance(kind, str):
        raise BadRequest("fault: expected a meter fault name")
    try:
        fault = make_meter_fault(kind, {k: v for k, v in body.items() if k != "fault"})
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    await meters.meters[site].set_fault(fault)
    return web.json_response({"site": site, "fault": fault.describe()})


async def post_meter_extra_load(request: web.Request) -> web.Response:
    meters, site = _meter_of(request)
    body = await _body(request)
    kw = body.get("kw")
    if isinstance(kw, bool) or not isinstance(kw, (int, float)) or not 0 <= kw <= MAX_EXTRA_LOAD_KW:
        raise BadRequest(f"kw: expected a number from 0 to {MAX_EXTRA_LOAD_KW:g}, got {kw!r}")
    unknown = set(body) - {"kw"}
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(sorted(unknown))}")
    await meters.meters[site].set_extra_load(float(kw) * 1000.0)
    return web.json_response({"site": site, "extra_load_w": float(kw) * 1000.0})


async def delete_meter_fault(request: web.Request) -> web.Response:
    meters, site = _meter_of(request)
    await meters.meters[site].set_fault(None)
    return web.json_response({"site": site, "fault": None})


async def get_miners(request: web.Request) -> web.Response:
    rows = await request.app[BACKEND].miners()
    site = request.query.get("site")
    if site is not None:
        rows = [row for row in rows if row["site"] == site]
    return web.json_response({"miners": rows})


async def post_load(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    site = request.match_info["site"]
    if site not in backend.site_ids:
        raise BadRequest(f"unknown site {site!r} (known: {', '.join(backend.site_ids)})", 404)
    body = await _body(request)
    factor = body.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= MAX_LOAD_FACTOR:
        raise BadRequest(f"factor: expected a number > 0 and <= {MAX_LOAD_FACTOR:g}, got {factor!r}")
    unknown = set(body) - {"factor"}
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(sorted(unknown))}")
    await backend.set_load(site, float(factor))
    return web.json_response({"site": site, "factor": float(factor)})


def parse_fault_request(body: dict[str, Any], backend: Backend) -> tuple[list[int], Fault]:
    """Validate a POST /api/v1/faults body; return the chosen miner indices and the fault."""
    kind = body.get("fault")
    if not isinstance(kind, str):
        raise BadRequest("fault: expected a fault name")
    targets = [k for k in ("site", "miners", "indices") if k in body]
    params = {k: v for k, v in body.items() if k not in ("fault", "site", "fraction", "miners", "indices")}
    try:
        fault = make_fault(kind, params)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if targets == ["site"]:
        site = body["site"]
        fraction = body.get("fraction")
        if site not in backend.site_ids:
            raise BadRequest(f"unknown site {site!r} (known: {', '.join(backend.site_ids)})", 404)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise BadRequest(f"fraction: expected a number from 0 to 1, got {fraction!r}")
        return select_site_fraction(backend.plan, backend.seed, site, kind, float(fraction)), fault
    if "fraction" in body:
        raise BadRequest("fraction goes with site, not with miners")
    if targets == ["miners"]:
        names = body["miners"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise BadRequest("miners: expected a non-empty list of addresses")
        indices, unknown = resolve_names(backend.plan, names)
        if unknown:
            raise BadRequest(f"unknown miners: {', '.join(unknown[:10])}", 404)
        return indices, fault
    if targets == ["indices"]:
        indices = body["indices"]
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise BadRequest("indices: expected a list of miner indices")
        return indices, fault
    raise BadRequest("give exactly one of site (with fraction) or miners")


async def post_faults(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    indices, fault = parse_fault_request(await _body(request), backend)
    applied = await backend.set_fault(indices, fault)
    by_index = {p.index: p.name for p in backend.plan}
    return web.json_response({
        "fault": fault.describe(), "applied": applied,
        "miners": [by_index[i] for i in indices if i in by_index],
    })


async def post_swaps(request: web.Request) -> web.Response:
    """{"miners": [...]} or {"indices": [...]}, optional "model": another unit at each of those addresses."""
    backend = request.app[BACKEND]
    body = await _body(request)
    model = body.pop("model", None)
    if model is not None and not isinstance(model, str):
        raise BadRequest(f"model: expected a model name, got {model!r}")
    unknown = set(body) - {"miners", "indices"}
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(sorted(unknown))}")
    # The same miner selection as a fault takes (site fractions aside).
    indices, _ = parse_fault_request({**body, "fault": "offline"}, backend)
    swapped = await backend.swap(indices, model)
    by_index = {p.index: p.name for p in backend.plan}
    return web.json_response({"swapped": swapped, "miners": [by_index[i] for i in indices if i in by_index]})


async def delete_faults(request: web.Request) -> web.Response:
    return web.json_response({"cleared": await request.app[BACKEND].clear_faults()})


def _whole(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key}: expected a whole number from {low} to {high}, got {value!r}")
    return value


async def post_clock(request: web.Request) -> web.Response:
    """{"freeze": bool, "advance": ticks}; "at"/"offset" are how the parent keeps workers in step."""
    body = await _body(request)
    freeze = body.get("freeze")
    if freeze is not None and not isinstance(freeze, bool):
        raise BadRequest(f"freeze: expected true or false, got {freeze!r}")
    advance = _whole(body, "advance", 0, 1_000_000) or 0
    at = _whole(body, "at", 0, 1 << 40)
    offset = _whole(body, "offset", -(1 << 40), 1 << 40)
    unknown = set(body) - {"freeze", "advance", "at", "offset"}
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(sorted(unknown))}")
    backend = request.app[BACKEND]
    if at is not None or offset is not None:
        if not isinstance(backend, LocalBackend):
            raise BadRequest("at/offset are for worker processes")
        clock = backend.fleet.clock
        if at is not None:
            clock.freeze(at=at)
        elif offset is not None:
            clock.frozen = None
            clock.offset = offset
    return web.json_response(await backend.clock(freeze, advance))


async def get_index(request: web.Request) -> web.Response:
    faults = {kind: PARAMETERS.get(kind, {}) for kind in ("offline", *PARAMETERS)}
    return web.json_response({"endpoints": [
        "GET /api/v1/truth", "GET /api/v1/miners[?site=]", "POST /api/v1/sites/{site}/load",
        "POST /api/v1/faults", "DELETE /api/v1/faults", "POST /api/v1/clock", "POST /api/v1/meters/{site}/fault",
        "DELETE /api/v1/meters/{site}/fault", "POST /api/v1/meters/{site}/extra_load"], "fault_parameters": faults,
        "meter_fault_parameters": {kind: {name: spec[0] for name, spec in params.items()}
                                   for kind, params in METER_FAULTS.items()}})


def make_app(backend: Backend, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_guard(token), _errors], client_max_size=1024 * 1024)
    app[BACKEND] = backend
    app.router.add_get("/", get_index)
    app.router.add_get("/api/v1/truth", get_truth)
    app.router.add_get("/api/v1/miners", get_miners)
    app.router.add_post("/api/v1/sites/{site}/load", post_load)
    app.router.add_post("/api/v1/faults", post_faults)
    app.router.add_delete("/api/v1/faults", delete_faults)
    app.router.add_post("/api/v1/swaps", post_swaps)
    app.router.add_post("/api/v1/clock", post_clock)
    app.router.add_post("/api/v1/meters/{site}/fault", post_meter_fault)
    app.router.add_delete("/api/v1/meters/{site}/fault", delete_meter_fault)
    app.router.add_post("/api/v1/meters/{site}/extra_load", post_meter_extra_load)
    return app


async def start_control(backend: Backend, host: str, port: int,
                        token: str | None = None) -> tuple[web.AppRunner, int]:
    """Serve the endpoint; refuses any non-loopback address (it can change what miners report)."""
    if not is_loopback(host):
        raise ValueError(f"control endpoint must bind a loopback address, not {host!r}")
    runner = web.AppRunner(make_app(backend, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp gives no public way to learn an ephemeral port
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
