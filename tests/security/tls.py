"""Throwaway TLS material and web-config files for tests: made per test in a temp dir, never committed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest

# Cost 4 (the minimum) keeps tests fast; the server checks any cost the same way.
TEST_COST = 4


def require_openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed; the TLS tests need it to make a certificate")
        pytest.skip("openssl is not installed")
    return path


def make_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1, 127.0.0.2 and localhost, valid one day: (cert, key)."""
    openssl = require_openssl()
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=megawatch-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def bcrypt_hash(password: str, cost: int = TEST_COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def write_web_config(directory: Path, *, tls: bool = True, users: dict[str, str] | None = None,
                     name: str = "web-config.yml") -> Path:
    """A web-config file with a fresh certificate (when `tls`) and `users` as {name: password}."""
    lines = []
    if tls:
        cert, key = make_cert(directory)
        lines += ["tls_server_config:", f"  cert_file: {cert.name}", f"  key_file: {key.name}"]
    if users:
        lines.append("basic_auth_users:")
        lines += [f"  {user}: '{bcrypt_hash(password)}'" for user, password in users.items()]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path
