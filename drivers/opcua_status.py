"""OPC UA StatusCode → metrogate quality and reason (pure).

A StatusCode is 32 bits: the top two are the severity (00 Good, 01 Uncertain,
10/11 Bad), bits 16–29 the sub-code, the low 16 bits info bits (limits, overflow)
that do not change the severity. The quality is the severity; the reason comes
from the sub-code by :data:`REASONS`, and a sub-code not listed falls back to the
family's default (:data:`FAMILY_DEFAULT`). A Good value never carries a reason.

The table is written by name so it reads like the specification (OPC 10000-4
§7.39, 10000-8 §6.3.2); names and numbers come from asyncua's status code table.
"""

from __future__ import annotations

from asyncua.ua import status_codes

from drivers.base import Quality, Reason

__all__ = ["FAMILY_DEFAULT", "REASONS", "quality_of", "status_name"]

_BY_NAME: dict[str, int] = {
    name: code for code, (name, _doc) in status_codes.code_to_name_doc.items()
}

FAMILY_DEFAULT: dict[Quality, Reason | None] = {
    Quality.GOOD: None,
    Quality.UNCERTAIN: Reason.INVALID_VALUE,
    Quality.BAD: Reason.DEVICE_FAILURE,
}
"""The reason of a sub-code :data:`REASONS` does not list."""

_REASONS_BY_NAME: dict[str, Reason] = {
    # the value's source cannot be reached
    "BadNoCommunication": Reason.NO_COMMUNICATION,
    "BadCommunicationError": Reason.NO_COMMUNICATION,
    "BadNotConnected": Reason.NO_COMMUNICATION,
    "BadServerNotConnected": Reason.NO_COMMUNICATION,
    "BadConnectionClosed": Reason.NO_COMMUNICATION,
    "BadDisconnect": Reason.NO_COMMUNICATION,
    "BadServerHalted": Reason.NO_COMMUNICATION,
    "BadShutdown": Reason.NO_COMMUNICATION,
    "BadTimeout": Reason.NO_COMMUNICATION,
    "BadRequestTimeout": Reason.NO_COMMUNICATION,
    "BadSessionClosed": Reason.NO_COMMUNICATION,
    "BadSessionIdInvalid": Reason.NO_COMMUNICATION,
    "BadSecureChannelClosed": Reason.NO_COMMUNICATION,
    "BadWaitingForInitialData": Reason.NO_COMMUNICATION,
    # the instrument says so itself
    "BadDeviceFailure": Reason.DEVICE_FAILURE,
    "BadSensorFailure": Reason.SENSOR_FAILURE,
    "BadOutOfService": Reason.OUT_OF_SERVICE,
    "BadOutOfRange": Reason.UNITS_EXCEEDED,
    # the configuration asks for something the server does not have or allow
    "BadConfigurationError": Reason.CONFIG_ERROR,
    "BadNodeIdUnknown": Reason.CONFIG_ERROR,
    "BadNodeIdInvalid": Reason.CONFIG_ERROR,
    "BadAttributeIdInvalid": Reason.CONFIG_ERROR,
    "BadNotReadable": Reason.CONFIG_ERROR,
    "BadUserAccessDenied": Reason.CONFIG_ERROR,
    "BadTypeMismatch": Reason.CONFIG_ERROR,
    "BadIndexRangeInvalid": Reason.CONFIG_ERROR,
    "BadIndexRangeNoData": Reason.CONFIG_ERROR,
    "BadDataEncodingInvalid": Reason.CONFIG_ERROR,
    "BadNotSupported": Reason.CONFIG_ERROR,
    "BadNoMatch": Reason.CONFIG_ERROR,
    "BadBrowseNameInvalid": Reason.CONFIG_ERROR,
    "BadMonitoredItemFilterUnsupported": Reason.CONFIG_ERROR,
    "BadMonitoredItemFilterInvalid": Reason.CONFIG_ERROR,
    "BadFilterNotAllowed": Reason.CONFIG_ERROR,
    "BadDeadbandFilterInvalid": Reason.CONFIG_ERROR,
    "BadTooManySubscriptions": Reason.CONFIG_ERROR,
    "BadTooManyMonitoredItems": Reason.CONFIG_ERROR,
    # uncertain values
    "UncertainLastUsableValue": Reason.LAST_USABLE_VALUE,
    "UncertainNoCommunicationLastUsableValue": Reason.NO_COMMUNICATION,
    "UncertainSensorNotAccurate": Reason.SENSOR_FAILURE,
    "UncertainSensorCalibration": Reason.CALIBRATION_EXPIRED,
    "UncertainEngineeringUnitsExceeded": Reason.UNITS_EXCEEDED,
    "UncertainConfigurationError": Reason.CONFIG_ERROR,
    "UncertainSubstituteValue": Reason.INVALID_VALUE,
    "UncertainInitialValue": Reason.INVALID_VALUE,
    "UncertainSubNormal": Reason.INVALID_VALUE,
    "UncertainDataSubNormal": Reason.INVALID_VALUE,
}

REASONS: dict[int, Reason] = {_BY_NAME[name]: r for name, r in _REASONS_BY_NAME.items()}
"""Sub-code (the StatusCode with its info bits cleared) → reason."""


def severity(code: int) -> Quality:
    """The quality a StatusCode's severity bits give."""
    top = code >> 30 & 0x3
    if top == 0:
        return Quality.GOOD
    return Quality.UNCERTAIN if top == 1 else Quality.BAD


def quality_of(code: int) -> tuple[Quality, Reason | None]:
    """Quality and reason of a StatusCode (see the module docstring)."""
    quality = severity(code)
    if quality is Quality.GOOD:
        return quality, None
    return quality, REASONS.get(code & 0xFFFF0000, FAMILY_DEFAULT[quality])


def status_name(code: int) -> str:
    """``BadNodeIdUnknown`` for ``0x80340000``; the hex code for one the table lacks."""
    known = status_codes.code_to_name_doc.get(code & 0xFFFF0000)
    return known[0] if known is not None else f"0x{code:08X}"
