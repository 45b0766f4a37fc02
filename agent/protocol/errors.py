"""Typed failures of one request to a miner; the poller counts them by `kind`."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    UNREACHABLE = "unreachable"  # connection refused, no route, reset before any byte
    TIMEOUT = "timeout"  # connect or whole-request deadline passed
    MALFORMED = "malformed"  # bytes came back but no JSON object could be recovered
    TOO_LARGE = "too_large"  # the reply passed the byte cap
    EMPTY = "empty"  # the miner closed without a byte (often: our address is not in its allow-list)
    API_ERROR = "api_error"  # a well-formed reply with STATUS E or F


class MinerError(Exception):
    """Base of every failure the client raises for a miner's fault (never for ours)."""

    kind: ErrorKind

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalShortage(Exception):
    """The agent itself ran out of something (file descriptors): the poll never reached the miner.

    Not a MinerError: the miner is not to blame, is not marked down and is not backed off.
    """

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno


class ConnectFailed(MinerError):
    kind = ErrorKind.UNREACHABLE


class PollTimeout(MinerError):
    kind = ErrorKind.TIMEOUT

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase  # "connect" or "reply"


class ReplyTooLarge(MinerError):
    kind = ErrorKind.TOO_LARGE

    def __init__(self, message: str, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes


class EmptyReply(MinerError):
    kind = ErrorKind.EMPTY


class BadReply(MinerError):
    kind = ErrorKind.MALFORMED

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw[:4096]  # kept for diagnostics, bounded


class CommandRejected(MinerError):
    """STATUS E/F from the miner, with its code and message."""

    kind = ErrorKind.API_ERROR

    def __init__(self, message: str, code: int | None = None, status: str = "E") -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class PrivilegedCommandRefused(Exception):
    """We refused to send a write/privileged command because control is not enabled.

    Not a MinerError: it is the caller's mistake, raised before any byte goes out.
    """
