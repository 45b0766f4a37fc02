"""common/webconfig.py: the web-config file, basic auth (bcrypt) and TLS on an aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from megawatch.common import webconfig
from megawatch.common.configfile import ConfigError
from megawatch.common.webconfig import load_web_config, protect
from tests.security.tls import bcrypt_hash, make_cert, write_web_config

GOOD_HASH = bcrypt_hash("s3cret")

# web-config text -> (line, the one error line's key and problem)
BAD = {
    "tls_server_config:\n  cert_file: a.crt\n": (2, "tls_server_config.key_file: required key is missing"),
    "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  keyfile: x\n":
        (4, "tls_server_config.keyfile: unknown key (did you mean 'key_file'?)"),
    "tls_server_config:\n  cert_file: nope.crt\n  key_file: a.crt\n":
        (2, "tls_server_config.cert_file: no such file:"),
    "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  min_version: TLS10\n":
        (4, "tls_server_config.min_version: expected one of TLS12, TLS13, got 'TLS10'"),
    "basic_auth_users:\n  prometheus: plain-password\n":
        (2, "basic_auth_users.prometheus: expected a bcrypt hash such as '$2b$10$...' (not the password itself)"),
    "basic_auth_users:\n  prometheus: 42\n": (2, "basic_auth_users.prometheus: expected a bcrypt hash"),
    "basic_auth_users: [prometheus]\n": (1, "basic_auth_users: expected a mapping, got a list"),
    f"basic_auth_users:\n  'a:b': '{GOOD_HASH}'\n": (2, "basic_auth_users.a:b: expected a user name without ':'"),
    "http_server_config: {http2: true}\n": (1, "http_server_config: unknown key"),
    "tls_server_config: {cert_file: a.crt, key_file: a.crt}\n":
        (1, "tls_server_config.cert_file: cannot load the certificate and key pair"),
}


@pytest.mark.parametrize("text", list(BAD), ids=[str(i) for i in range(len(BAD))])
def test_bad_web_config_is_one_line_naming_file_line_and_key(tmp_path: Path, text: str) -> None:
    (tmp_path / "a.crt").write_text("not a certificate\n")
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    line, expected = BAD[text]
    lines = str(info.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:{line}: {expected}"), lines[0]


def test_valid_file_reads_paths_beside_it_and_keeps_hashes_out_of_repr(tmp_path: Path) -> None:
    path = write_web_config(tmp_path, users={"prometheus": "s3cret"})
    config = load_web_config(path)
    assert config.scheme == "https" and config.ssl_context is not None
    assert config.cert_file == tmp_path / "server.crt" and config.min_version == "TLS12"
    assert set(config.users) == {"prometheus"}
    assert "$2b$" not in repr(config)
    assert config.ssl_context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_auth_only_file_serves_plain_http(tmp_path: Path) -> None:
    config = load_web_config(write_web_config(tmp_path, tls=False, users={"p": "x"}))
    assert config.scheme == "http" and config.ssl_context is None and set(config.users) == {"p"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _app() -> web.Application:
    app = web.Application()
    for path in ("/metrics", "/healthz", "/api/v1/summary", "/"):
        app.router.add_get(path, _ok)
    return app


async def test_every_path_needs_credentials_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_web_config(write_web_config(tmp_path, users={"prometheus": "s3cret"}))
    checks: list[bytes] = []
    real = webconfig._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checks.append(password)
        return real(password, hashed)

    monkeypatch.setattr(webconfig, "_checkpw", counting)
    app = _app()
    protect(app, config)
    server = TestServer(app, host="127.0.0.1", ssl=config.ssl_context)  # type: ignore[call-arg]
    await server.start_server(ssl=config.ssl_context)
    client_tls = ssl.create_default_context(cafile=str(config.cert_file))
    base = f"https://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for path in ("/metrics", "/healthz", "/api/v1/summary", "/", "/no-such-path"):
                async with http.get(base + path, ssl=client_tls) as resp:
                    assert resp.status == 401, path
                    assert resp.headers["WWW-Authenticate"].startswith('Basic realm="megawatch"')
            for header in (_basic("prometheus", "wrong"), _basic("nobody", "s3cret"), "Basic !!!notbase64",
                           "Bearer abc", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + "A" * 5000):
                async with http.get(base + "/metrics", ssl=client_tls, headers={"Authorization": header}) as resp:
                    assert resp.status == 401, header[:40]
            for _ in range(3):
                async with http.get(base + "/metrics", ssl=client_tls,
                                    headers={"Authorization": _basic("prometheus", "s3cret")}) as resp:
                    assert resp.status == 200 and await resp.text() == "ok"
            # Plain HTTP to the TLS port gets no page.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{server.port}/metrics",
                                    headers={"Authorization": _basic("prometheus", "s3cret")}) as resp:
                    await resp.read()
                    assert resp.status != 200
    finally:
        await server.close()
    # Three good scrapes cost one bcrypt check (then cached); the unknown user still paid one (no timing hint).
    assert checks.count(b"s3cret") == 2 and checks.count(b"wrong") == 1


async def test_untrusted_certificate_is_refused_by_a_verifying_client(tmp_path: Path) -> None:
    config = load_web_config(write_web_config(tmp_path, users={}))
    other_cert, _ = make_cert(tmp_path, "other")
    app = _app()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=config.ssl_context)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"https://127.0.0.1:{server.port}/metrics",
                               ssl=ssl.create_default_context(cafile=str(other_cert)))
            async with http.get(f"https://127.0.0.1:{server.port}/metrics",
                                ssl=ssl.create_default_context(cafile=str(config.cert_file))) as resp:
                assert resp.status == 200  # no users configured: TLS only
    finally:
        await server.close()


def test_the_shipped_example_loads_as_plain_http() -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "web-config.yml"
    config = load_web_config(example)
    assert config.ssl_context is None and not config.users


async def test_a_flood_of_wrong_passwords_does_not_delay_another_clients_login(tmp_path: Path) -> None:
    """Bcrypt work is bounded per client address: 100 wrong passwords at once from one address (at a real
    cost of 10) cost a handful of checks, and a valid, not yet cached login from another address is quick."""
    path = tmp_path / "web-config.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{bcrypt_hash('s3cret', cost=10)}'\n")
    config = load_web_config(path)
    app = _app()
    protect(app, config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}/metrics"
    flood_statuses: list[int] = []

    async def wrong(http: aiohttp.ClientSession, i: int) -> None:
        async with http.get(base, headers={"Authorization": _basic("prometheus", f"guess{i}")}) as resp:
            flood_statuses.append(resp.status)

    try:
        timeout = aiohttp.ClientTimeout(total=120)
        attacker = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
        async with (aiohttp.ClientSession(connector=attacker, timeout=timeout) as flood,
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0)),
                                          timeout=timeout) as scraper):
            attack = asyncio.gather(*(wrong(flood, i) for i in range(100)))
            await asyncio.sleep(0.2)  # the flood is in: every one of its requests has arrived or is arriving
            started = time.monotonic()
            async with scraper.get(base, headers={"Authorization": _basic("prometheus", "s3cret")}) as resp:
                assert resp.status == 200
            waited = time.monotonic() - started
            await attack
    finally:
        await server.close()
    assert waited < 2.0, f"a valid login waited {waited:.2f} s behind the flood"
    assert set(flood_statuses) <= {401, 429} and flood_statuses.count(401) <= 12, flood_statuses
    print(f"valid login during a 100-request flood: {waited * 1000:.0f} ms; flood: "
          f"{flood_statuses.count(401)} checked (401), {flood_statuses.count(429)} refused unchecked (429)")
