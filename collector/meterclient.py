"""Read site meters over Modbus TCP (pymodbus): one connection per meter, one deadline per reading.

A reading (connect if needed, then the map's requests) has one deadline, the meter's `timeout_s`, which the
config holds to at most the collector's poll interval: a meter that does not answer costs one timeout per
cycle, never a pile of retries. pymodbus's own retries and reconnect loop are off: this module reconnects,
once per cycle, when the last reading failed. Requests to one meter go one at a time over one connection
(many meters and gateways serve one or two clients and drop the rest).

Failures come back as one of MeterErrorKind (connect_failed, timeout, device_error, layout), with detail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from megawatch.collector.meterconfig import MeterConfig
from megawatch.collector.meters import MeterError, MeterErrorKind, make_map
from megawatch.collector.sitemeter import MeterResult
from megawatch.common.logs import get_logger


def _quiet_pymodbus() -> None:
    """pymodbus logs every refused connect and timeout itself, each cycle; meter_read_failed says it once."""
    library = logging.getLogger("pymodbus")
    if not any(isinstance(h, logging.NullHandler) for h in library.handlers):
        library.addHandler(logging.NullHandler())
    library.propagate = False


class MeterClient:
    """One site meter: its connection, its map (SunSpec remembers where its meter model is) and its deadline."""

    def __init__(self, site: str, config: MeterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.site = site
        self.config = config
        self.clock = clock
        self.map = make_map(config)
        self._client: AsyncModbusTcpClient | None = None
        _quiet_pymodbus()

    def _connection(self) -> AsyncModbusTcpClient:
        if self._client is None:
            # retries=0 and no reconnect loop: the deadline below is the whole budget, spent here, once.
            self._client = AsyncModbusTcpClient(self.config.host, port=self.config.port,
                                                timeout=self.config.timeout_s, retries=0, reconnect_delay=0)
        return self._client

    async def _request(self, function: int, address: int, count: int) -> list[int]:
        client = self._connection()
        try:
            if function == 3:
                reply = await client.read_holding_registers(address, count=count, device_id=self.config.unit_id)
            else:
                reply = await client.read_input_registers(address, count=count, device_id=self.config.unit_id)
        except ConnectionException as exc:
            raise MeterError(MeterErrorKind.CONNECT, str(exc) or "connection lost") from None
        except ModbusIOException:
            raise MeterError(MeterErrorKind.TIMEOUT, f"no answer within {self.config.timeout_s:g} s") from None
        except ModbusException as exc:
            raise MeterError(MeterErrorKind.LAYOUT, f"bad reply: {exc}") from None
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            raise MeterError(MeterErrorKind.DEVICE, f"exception code {code} reading {count} "
                             f"{'holding' if function == 3 else 'input'} registers at {address}")
        return list(reply.registers)

    async def _reading(self) -> MeterResult:
        started = self.clock()
        client = self._connection()
        if not client.connected and not await client.connect():
            raise MeterError(MeterErrorKind.CONNECT, f"cannot connect to {self.config.endpoint}")
        reading = await self.map.sample(self._request)
        return MeterResult(reading, None, max(0.0, self.clock() - started))

    async def read(self) -> MeterResult:
        """One reading within the meter's deadline; never raises for the meter's faults."""
        started = self.clock()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await self._reading()
        except TimeoutError:
            error = MeterError(MeterErrorKind.TIMEOUT, f"no answer within {self.config.timeout_s:g} s")
        except MeterError as exc:
            error = exc
        except OSError as exc:
            error = MeterError(MeterErrorKind.CONNECT, f"{type(exc).__name__}: {exc}")
        # Start afresh next cycle: a late reply must not answer the next request, and a device that moved
        # its models (a firmware update) is searched again.
        self.close()
        self.map.forget()
        return MeterResult(None, str(error), max(0.0, self.clock() - started))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class MeterReader:
    """Every site's meter, read concurrently; logs `meter_read_failed` / `meter_recovered` once per change."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.clients: dict[str, MeterClient] = {}
        self.reads: Counter[tuple[str, str]] = Counter()  # (site, ok or an error kind) -> reads
        self.duration_s: dict[str, float] = {}  # site -> how long its last reading took
        self._failing: dict[str, str] = {}  # site -> error kind it started failing with
        self._log = get_logger()

    def configure(self, meters: Mapping[str, MeterConfig]) -> None:
        """Take the meters of a (re)loaded config: keep connections whose meter did not change."""
        for site, client in list(self.clients.items()):
            if meters.get(site) != client.config:
                client.close()
                del self.clients[site]
                self._failing.pop(site, None)
                self.duration_s.pop(site, None)
                self.reads = Counter({k: n for k, n in self.reads.items() if k[0] != site})
        for site, config in meters.items():
            if site not in self.clients:
                self.clients[site] = MeterClient(site, config, self.clock)

    async def read_all(self) -> dict[str, MeterResult]:
        sites = list(self.clients)
        results = await asyncio.gather(*(self.clients[s].read() for s in sites))
        for site, result in zip(sites, results, strict=True):
            self._note(site, result)
            self.reads[(site, "ok" if result.error is None else result.error.split(":", 1)[0])] += 1
            self.duration_s[site] = result.duration_s
        return dict(zip(sites, results, strict=True))

    def _note(self, site: str, result: MeterResult) -> None:
        client = self.clients[site]
        if result.error is not None and site not in self._failing:
            self._failing[site] = result.error
            self._log.warning("meter_read_failed", site=site, meter=client.config.endpoint, error=result.error)
        elif result.error is None and site in self._failing:
            del self._failing[site]
            self._log.info("meter_recovered", site=site, meter=client.config.endpoint)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
