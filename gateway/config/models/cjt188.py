"""CJ/T 188-2018 water, heat and gas meters on a serial bus (``driver: cjt188``).

A meter is one device on a bus (:class:`~gateway.config.models.serial.SerialDevice`),
told apart on the line by its 14-digit address and meter type. Its points name fields
of the current data (901FH) or status bits (docs/serial.md). What one object can know
is checked here (address and type syntax, the manufacturer bits); which fields a meter
type has is checked when the plan is compiled (the registry), so the problem is
located at the point; a wildcard meter that is not alone on its line is the kind's
check over all its devices.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from drivers.cjt188 import (
    METER_TYPES,
    WILDCARD,
    StatusBit,
    check_status_bits,
    encode_address,
    family_of,
)
from gateway.common.types import Ident, Strict, finite
from gateway.config.models.metrology import PointMetrologyFields
from gateway.config.models.serial import SerialDevice

__all__ = [
    "METER_TYPE_NAMES",
    "Cjt188Device",
    "Cjt188PointConfig",
    "Cjt188StatusBit",
    "parse_meter_type",
]

METER_TYPE_NAMES: dict[str, int] = {
    "cold_water": 0x10,
    "hot_water": 0x11,
    "drinking_water": 0x12,
    "reclaimed_water": 0x13,
    "heat": 0x20,
    "cooling": 0x21,
    "gas": 0x30,
    "electricity": 0x40,
}
"""Names for the meter types the standard defines (:data:`drivers.cjt188.METER_TYPES`)."""


def parse_meter_type(value: object) -> int:
    """``"10"``, ``"10H"``, ``"0x10"``, ``10`` (as the standard writes 10H) or a name → 0x10.

    Raises :class:`ValueError` for anything that is not a CJ/T 188 meter type (10H–49H).
    """
    if isinstance(value, bool):
        raise ValueError('a meter type is a code such as "10" (10H) or a name, not a boolean')
    if isinstance(value, int):
        text = str(value)  # `meter_type: 10` means 10H, as the standard writes it
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f'meter type {value!r}: a code such as "10" (10H) or a name')
    if text.lower() in METER_TYPE_NAMES:
        return METER_TYPE_NAMES[text.lower()]
    digits = text.upper().removeprefix("0X").removesuffix("H")
    try:
        code = int(digits, 16) if len(digits) == 2 else -1
        family_of(code)
    except ValueError:
        names = ", ".join(METER_TYPE_NAMES)
        raise ValueError(
            f'meter type {value!r}: a code 10H–49H written "10", "10H" or "0x10", or one of {names}'
        ) from None
    return code


def _meter_address(value: object) -> str:
    text = str(value).strip().upper()
    if text.isdigit() and len(text) < 14:
        text = text.zfill(14)  # YAML reads 00000012345678 as a number
    encode_address(text)  # raises ValueError naming what is wrong
    return text


MeterType = Annotated[
    int,
    BeforeValidator(parse_meter_type),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*(0[xX])?[1-4][0-9][hH]?\s*$"},
                {"enum": list(METER_TYPE_NAMES)},
                {"type": "integer", "minimum": 10, "maximum": 49},
            ],
            "description": 'CJ/T 188 meter type: "10" (10H cold water) … "49", or a name',
        }
    ),
]
"""A CJ/T 188 meter type code (T), kept as its number (0x10 for 10H)."""

Cjt188Address = Annotated[
    str,
    BeforeValidator(_meter_address),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{14}$",
            "description": "14 digits as on the nameplate; AAAAAAAAAAAAAA: the wildcard",
        }
    ),
]
"""A meter address: 14 (hexadecimal) digits, fewer decimal digits zero-padded."""


class Cjt188StatusBit(Strict):
    """A manufacturer bit D3–D15 of the status word, by the meter's manual."""

    bit: int = Field(ge=3, le=15, description="D3–D15 (D0–D2 are the standard's).")
    name: Ident = Field(description="Its point field and, while set, flag status:NAME.")
    fault: bool = Field(
        False, description="The measurement is impaired while set: values are uncertain."
    )
    tamper: bool = Field(
        False,
        description="Tamper evidence (magnet, opened case): its point's changes go to the "
        "audit trail.",
    )

    def status_bit(self) -> StatusBit:
        return StatusBit(self.bit, self.name, self.fault)


class Cjt188PointConfig(PointMetrologyFields):
    id: Ident
    field: str = Field(
        description="A field of the current data (cumulative_flow, current_heat, flow_rate, "
        "supply_temperature, meter_time, status, ...), a standard status bit (valve_open, "
        "valve_closed, valve_abnormal, battery_low) or the name of a status_bits entry."
    )
    unit: str | None = Field(
        None, description="Quantities: converted to this unit (m3, L, kWh, MWh, GJ, kW, ...)."
    )
    scale: Annotated[float, finite("scale")] = 1.0
    offset: Annotated[float, finite("offset")] = 0.0
    description: str | None = None
    sim: Any = Field(
        None, description="Simulator value for this point (metrogate sim): see docs/simulator.md."
    )


class Cjt188Device(SerialDevice):
    driver: Literal["cjt188"]
    address: Cjt188Address = Field(
        description="14 digits as on the nameplate; AAAAAAAAAAAAAA (the wildcard) for the "
        "single meter of a line."
    )
    meter_type: MeterType = Field(
        # required, but usually from the profile: the schema cannot say that, `check` does
        None,  # type: ignore[assignment]
        description='Required (often from the profile). T: "10" cold, "11" hot, "12" drinking, '
        '"13" reclaimed water; "20" heat, "21" cooling; "30" gas; "40" electricity (or '
        "cold_water, heat, gas, ...).",
        validate_default=False,
    )
    di_order: Literal["low_first", "high_first"] = Field(
        "low_first", description="How the meter wants DI 901FH: low_first 1F 90, high_first 90 1F."
    )
    preamble: int = Field(2, ge=0, le=4, description="FE bytes sent before each request.")
    status_bits: list[Cjt188StatusBit] = Field(
        default_factory=list, description="Manufacturer bits of the status word."
    )
    points: list[Cjt188PointConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _type_and_bits(self) -> Cjt188Device:
        if self.meter_type is None:
            raise ValueError("give meter_type (the device's or its profile's)")
        check_status_bits([b.status_bit() for b in self.status_bits])
        return self

    @property
    def wildcard(self) -> bool:
        """Whether the meter is asked by the wildcard address (alone on its line)."""
        return self.address == WILDCARD

    @property
    def type_name(self) -> str:
        return METER_TYPES.get(self.meter_type, f"{family_of(self.meter_type)} meter")

    def tamper_fields(self) -> frozenset[str]:
        """The status bits that are tamper evidence."""
        return frozenset(b.name for b in self.status_bits if b.tamper)
