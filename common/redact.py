"""Credentials out of everything megawatch exports: metric labels, API JSON and log lines.

Pool URLs come from the miners (what an operator once typed into the firmware, passwords included) and
agent or Alertmanager URLs from our own config (user:password@, ?token=). Both pass through here before
they are stored for export, so a secret never reaches a label, a JSON field or a log line.
"""

from __future__ import annotations

__all__ = ["public_url", "public_user", "redact_url_in"]


def public_url(url: str) -> str:
    """`url` without its user:password@ part, query and fragment (tokens live there); never raises.

    Works on what firmware shows too: no scheme (`acct:pw@pool:3333`), a password with an unescaped `@`
    (everything up to the last `@` of the address goes), a port that is not a number. The user part goes
    with the password: it is the URL's credential slot, and a pool's worker name is exported on its own.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The address ends at the first / ? or # after the last @ (a password may hold any of them unescaped).
    at = rest.rfind("@")
    if at >= 0:
        rest = rest[at + 1:]
    for mark in "?#":
        rest = rest.partition(mark)[0]
    return f"{scheme}://{rest}" if sep else rest


def public_user(user: str) -> str:
    """A pool's user (account.worker) without a password some firmware appends as `:pw` or `,pw`."""
    for mark in ":,":
        user = user.partition(mark)[0]
    return user


def redact_url_in(text: str, url: str) -> str:
    """`text` (an error message that may quote `url`) with `url`'s credentials and query replaced by `***`."""
    _, sep, rest = url.partition("://")
    rest = rest if sep else url
    at = rest.rfind("@")
    secrets = [rest[:at]] if at > 0 else []
    tail = rest[at + 1:]
    for mark in "?#":
        head, found, extra = tail.partition(mark)
        if found and extra:
            secrets.append(extra)
            tail = head
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
