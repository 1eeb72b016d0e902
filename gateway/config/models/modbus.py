"""Modbus point and Modbus TCP device models (shared by every Modbus transport).

Serial Modbus devices (RTU, ASCII) reuse :class:`ModbusPoint` and
:class:`HoleConfig`; only the way the device is reached differs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from drivers.modbus_codec import DataType, Order, PointSpec, Table
from drivers.modbus_common import point_types_ok
from gateway.common.types import Duration, Ident, Strict, finite
from gateway.config.models.device import DeviceFields
from gateway.config.models.metrology import PointMetrologyFields


class HoleConfig(Strict):
    """Addresses a device rejects; no request may span them."""

    table: Table
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535, description="Last rejected address (inclusive).")

    @model_validator(mode="after")
    def _order(self) -> HoleConfig:
        if self.end < self.start:
            raise ValueError("end must not be below start")
        return self


_REF_TABLES = {0: Table.COIL, 1: Table.DISCRETE, 3: Table.INPUT, 4: Table.HOLDING}


def parse_reference(ref: int | str) -> tuple[Table, int]:
    """A Modicon reference ("40001", "400001", 30010, ...) as (table, 0-based address).

    Five-digit references (1–9999 in each table) and six-digit ones (1–65536) are
    both accepted; the leading digit picks the table (0 coil, 1 discrete input,
    3 input register, 4 holding register).
    """
    text = str(ref).strip()
    if not text.isdigit() or len(text) not in (5, 6):
        # YAML reads 00001 as the number 1: coil references must be quoted
        hint = ' (quote coil references: ref: "00001")' if isinstance(ref, int) else ""
        raise ValueError(f"reference {ref!r}: write 5 or 6 digits, e.g. 40001 or 400001{hint}")
    table = _REF_TABLES.get(int(text[0]))
    if table is None:
        raise ValueError(f"reference {ref!r}: first digit must be 0, 1, 3 or 4")
    number = int(text[1:])
    if not 1 <= number <= 65536:
        raise ValueError(f"reference {ref!r}: register number must be 1..65536")
    return table, number - 1


class ModbusPoint(PointMetrologyFields):
    id: Ident
    table: Table | None = Field(None, description="coil, discrete, input or holding.")
    address: int | None = Field(None, ge=0, le=65535, description="0-based protocol address.")
    ref: int | str | None = Field(
        None, description='Modicon reference instead of table+address: "40001" = holding 0.'
    )
    type: DataType | None = Field(None, description="Default uint16, or bool on bit tables.")
    order: Order | None = Field(None, description="Byte/word order; default: the device's.")
    length: int = Field(0, ge=0, le=125, description="Registers of a string point.")
    chars_per_register: Literal[1, 2] = 2
    bit: int | None = Field(None, description="Bit 0..15 of a register, for a bool point.")
    scale: Annotated[float, finite("scale")] = 1.0
    offset: Annotated[float, finite("offset")] = 0.0
    unit: str | None = Field(None, max_length=32)
    description: str | None = None
    sim: Any = Field(
        None, description="Simulator value for this point (metrogate sim): see docs/simulator.md."
    )

    @model_validator(mode="after")
    def _where(self) -> ModbusPoint:
        if self.ref is not None:
            if self.table is not None or self.address is not None:
                raise ValueError("give either ref or table+address, not both")
            self.table, self.address = parse_reference(self.ref)
        elif self.table is None or self.address is None:
            raise ValueError("give table and address (0-based), or ref (e.g. 40001)")
        if self.type is None:
            self.type = DataType.BOOL if self.table.is_bit else DataType.UINT16
        spec = self.point_spec(Order.ABCD)
        problem = point_types_ok(spec)
        if problem:
            raise ValueError(problem)
        if self.type is not DataType.STRING:
            # silently ignoring these would read something other than what was meant
            if self.length:
                raise ValueError(
                    f"length is the register count of a string point; a {self.type.value} "
                    f"point is {spec.width} register(s) wide by its type"
                )
            if "chars_per_register" in self.model_fields_set:
                raise ValueError("chars_per_register applies to string points only")
        if spec.end > 65536:
            raise ValueError(
                f"{self.table.value} {self.address} + {spec.width} register(s) runs past "
                "the last address 65535"
            )
        return self

    def point_spec(self, device_order: Order) -> PointSpec:
        assert self.table is not None and self.address is not None and self.type is not None
        return PointSpec(
            id=self.id,
            table=self.table,
            address=self.address,
            type=self.type,
            order=self.order or device_order,
            length=self.length,
            bit=self.bit,
            scale=self.scale,
            offset=self.offset,
            chars_per_register=self.chars_per_register,
        )


class ModbusTcpDevice(DeviceFields):
    driver: Literal["modbus_tcp"]
    id: Ident
    enabled: bool = True
    description: str | None = None
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id.")
    framing: Literal["socket", "rtu"] = Field(
        "socket", description="socket: Modbus TCP; rtu: RTU frames over TCP (serial servers, DTUs)."
    )
    poll: Duration = Field(1.0, description="Poll period.")
    timeout: Duration = Field(0.5, description="Per-request timeout; must be below poll.")
    order: Order = Field(Order.ABCD, description="Default byte/word order of the device.")
    max_gap: int = Field(10, ge=0, le=124, description="Unused registers a request may bridge.")
    max_registers: int = Field(125, ge=1, le=125, description="Registers per request.")
    max_bits: int = Field(2000, ge=1, le=2000, description="Coils/inputs per request.")
    holes: list[HoleConfig] = Field(default_factory=list)
    profile: str | None = Field(None, description="Device profile in config/profiles/ (by name).")
    points: list[ModbusPoint] = Field(default_factory=list)

    def specs(self) -> list[PointSpec]:
        return [p.point_spec(self.order) for p in self.points]
