"""A Modbus TCP device on loopback for the meter tests: a pymodbus server answering from a register image.

`image[3]` is the holding table, `image[4]` the input table, each address -> register; a request touching an
address not in the image gets the exception reply "illegal data address", as a real device answers. The
tests change the image between reads; `silent` makes the device accept requests and never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


@dataclass
class FakeDevice:
    port: int = 0
    image: dict[int, dict[int, int]] = field(default_factory=lambda: {3: {}, 4: {}})
    silent: asyncio.Event = field(default_factory=asyncio.Event)  # set: requests are never answered
    requests: list[tuple[int, int, int]] = field(default_factory=list)  # (function, address, count)

    def put(self, function: int, address: int, words: list[int]) -> None:
        for i, word in enumerate(words):
            self.image[function][address + i] = word & 0xFFFF

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: Any) -> ExcCodes | None:
        self.requests.append((function_code, address, count))
        if self.silent.is_set():
            await asyncio.Event().wait()  # cancelled when the server shuts down
        table = self.image.get(function_code, {})
        for i in range(count):
            if address + i not in table:
                return ExcCodes.ILLEGAL_ADDRESS
            registers[address - start_address + i] = table[address + i]
        return None


@contextlib.asynccontextmanager
async def fake_device(unit_id: int = 1) -> AsyncIterator[FakeDevice]:
    device = FakeDevice()
    bits = [SimData(0, count=16, values=[False] * 16, datatype=DataType.BITS)]
    tables = [[SimData(0, count=65535, values=0, datatype=DataType.REGISTERS)] for _ in range(2)]
    server = ModbusTcpServer([SimDevice(unit_id, simdata=(bits, list(bits), *tables), action=device.action)],
                             address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    device.port = server.transport.sockets[0].getsockname()[1]
    try:
        yield device
    finally:
        device.silent.clear()
        await server.shutdown()


def words(value: float, kind: str, word_order: str = "big") -> list[int]:
    """`value` as the registers of `kind`, written independently of the decoder under test."""
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f", "int64": ">q",
           "uint64": ">Q", "float64": ">d"}[kind]
    raw = struct.pack(fmt, value if kind.startswith("float") else int(value))
    out = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return out if word_order == "big" else out[::-1]


def sunspec_image(device: FakeDevice, *, base: int = 40000, model: int = 203, w: int = 0, w_sf: int = 0,
                  wh: int = 0, wh_sf: int = 0, common_length: int = 66, before: tuple[tuple[int, int], ...] = ()
                  ) -> int:
    """A SunSpec device: 'SunS', Common (of `common_length`), the `before` models (id, length), the meter
    model, the end marker. Returns the meter model's address. Values are raw registers (signed ints ok)."""
    device.put(3, base, [0x5375, 0x6E53])
    at = base + 2
    for model_id, length in ((1, common_length), *before):
        device.put(3, at, [model_id, length, *[0] * length])
        at += length + 2
    meter = at
    length = 105 if model < 210 else 124
    block = [model, length, *[0x8000] * length]
    if model < 210:
        block[18], block[22] = w, w_sf
        block[46:48] = words(wh, "uint32")
        block[54] = wh_sf
    else:
        block[28:30] = words(w, "float32")
        block[68:70] = words(wh, "float32")
    device.put(3, meter, block)
    device.put(3, meter + length + 2, [0xFFFF, 0])
    return meter
