"""Register codec: every data type in every byte/word order, strings, bits, scale/offset."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Quality, Reason
from drivers.modbus_codec import (
    DataType,
    Order,
    PointSpec,
    Table,
    decode,
    decode_bits,
    encode,
    engineering,
    raw_from_engineering,
)
from drivers.modbus_common import PlanExecutor, decode_request
from drivers.modbus_plan import Request

ORDERS = list(Order)
INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
WIDTHS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}


def spec(data_type: DataType, order: Order = Order.ABCD, **kwargs: object) -> PointSpec:
    return PointSpec("p", Table.HOLDING, 0, data_type, order, **kwargs)  # type: ignore[arg-type]


def word(value: int) -> int:
    return value & 0xFFFF


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", list(INT_RANGES))
@given(data=st.data())
def test_integers_round_trip(data: st.DataObject, data_type: DataType, order: Order) -> None:
    lo, hi = INT_RANGES[data_type]
    value = data.draw(st.integers(lo, hi))
    s = spec(data_type, order)
    words = encode(s, value)
    assert len(words) == s.width == WIDTHS[data_type]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(s, words) == value


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", list(INT_RANGES))
@given(data=st.data())
def test_integer_words_round_trip(data: st.DataObject, data_type: DataType, order: Order) -> None:
    # every register pattern is some integer: decoding then encoding gives the words back
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=WIDTHS[data_type], max_size=4))
    words = words[: WIDTHS[data_type]]
    s = spec(data_type, order)
    assert encode(s, decode(s, words)) == words


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(width=32, allow_nan=False))
def test_float32_round_trip(order: Order, value: float) -> None:
    s = spec(DataType.FLOAT32, order)
    out = decode(s, encode(s, value))
    assert isinstance(out, float)
    assert struct.pack(">f", out) == struct.pack(">f", value)


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(allow_nan=False))
def test_float64_round_trip(order: Order, value: float) -> None:
    s = spec(DataType.FLOAT64, order)
    out = decode(s, encode(s, value))
    assert struct.pack(">d", out) == struct.pack(">d", value)


@pytest.mark.parametrize("data_type", [DataType.FLOAT32, DataType.FLOAT64])
@pytest.mark.parametrize("order", ORDERS)
def test_nan_and_infinities_survive(data_type: DataType, order: Order) -> None:
    s = spec(data_type, order)
    assert math.isnan(float(decode(s, encode(s, math.nan))))
    assert decode(s, encode(s, math.inf)) == math.inf
    assert decode(s, encode(s, -math.inf)) == -math.inf


# -- known register patterns -------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "words"),
    [
        (Order.ABCD, [0x0001, 0xE240]),  # the reply in PROTOCOLS.md: 00 01 E2 40
        (Order.CDAB, [0xE240, 0x0001]),
        (Order.BADC, [0x0100, 0x40E2]),
        (Order.DCBA, [0x40E2, 0x0100]),
    ],
)
def test_uint32_123456_in_every_order(order: Order, words: list[int]) -> None:
    s = spec(DataType.UINT32, order)
    assert decode(s, words) == 123456
    assert encode(s, 123456) == words


FLOAT32_PATTERNS = [
    (1.0, 0x3F800000),
    (-2.5, 0xC0200000),
    (230.5, 0x43668000),
    (123.456, 0x42F6E979),
]


@pytest.mark.parametrize(("value", "bits"), FLOAT32_PATTERNS)
@pytest.mark.parametrize("order", ORDERS)
def test_float32_bit_patterns(value: float, bits: int, order: Order) -> None:
    a, b, c, d = bits.to_bytes(4, "big")
    expected = {
        Order.ABCD: [a << 8 | b, c << 8 | d],
        Order.CDAB: [c << 8 | d, a << 8 | b],
        Order.BADC: [b << 8 | a, d << 8 | c],
        Order.DCBA: [d << 8 | c, b << 8 | a],
    }[order]
    s = spec(DataType.FLOAT32, order)
    assert encode(s, value) == expected
    assert decode(s, expected) == pytest.approx(value, rel=1e-7)


def test_float32_cdab_example() -> None:
    # a meter with swapped words reporting 230.5 V sends 0x8000 first, then 0x4366
    assert decode(spec(DataType.FLOAT32, Order.CDAB), [0x8000, 0x4366]) == 230.5


@pytest.mark.parametrize(
    ("order", "words"),
    [
        (Order.ABCD, [0x0102, 0x0304, 0x0506, 0x0708]),
        (Order.CDAB, [0x0708, 0x0506, 0x0304, 0x0102]),
        (Order.BADC, [0x0201, 0x0403, 0x0605, 0x0807]),
        (Order.DCBA, [0x0807, 0x0605, 0x0403, 0x0201]),
    ],
)
def test_uint64_orders(order: Order, words: list[int]) -> None:
    assert decode(spec(DataType.UINT64, order), words) == 0x0102030405060708


@pytest.mark.parametrize(
    ("order", "words", "value"),
    [
        (Order.ABCD, [0xFFFE], -2),
        (Order.CDAB, [0xFFFE], -2),  # a single register has no words to swap
        (Order.BADC, [0xFEFF], -2),
        (Order.DCBA, [0xFEFF], -2),
        (Order.ABCD, [0x8000], -32768),
    ],
)
def test_int16_orders(order: Order, words: list[int], value: int) -> None:
    assert decode(spec(DataType.INT16, order), words) == value
    assert decode(spec(DataType.UINT16, order), words) == word(value)


def test_signed_32_bit() -> None:
    assert decode(spec(DataType.INT32), [0xFFFF, 0xFFFF]) == -1
    assert decode(spec(DataType.INT32, Order.CDAB), [0x0000, 0x8000]) == -(2**31)


def test_wrong_register_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="need 2 registers, got 1"):
        decode(spec(DataType.FLOAT32), [0x3F80])


# -- strings -----------------------------------------------------------------------------

STRING_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=8)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("chars", [1, 2])
@given(text=STRING_TEXT)
def test_string_round_trip(order: Order, chars: int, text: str) -> None:
    s = spec(DataType.STRING, order, length=8, chars_per_register=chars)
    words = encode(s, text)
    assert len(words) == 8
    # trailing padding (NUL or blanks) is not part of the value
    assert decode(s, words) == text[: 8 * chars].rstrip()


def test_string_two_chars_per_register() -> None:
    s = spec(DataType.STRING, length=3)
    assert encode(s, "RUN") == [0x5255, 0x4E00, 0x0000]
    assert decode(s, [0x5255, 0x4E00, 0x0000]) == "RUN"
    assert decode(s, [0x4142, 0x4320, 0x2020]) == "ABC"  # blank padded


@pytest.mark.parametrize("order", [Order.BADC, Order.DCBA])
def test_string_swapped_bytes(order: Order) -> None:
    s = spec(DataType.STRING, order, length=2)
    assert decode(s, [0x5552, 0x004E]) == "RUN"
    assert encode(s, "RUN") == [0x5552, 0x004E]


def test_string_word_order_does_not_apply() -> None:
    # a CDAB device swaps the words of 32-bit numbers, not the characters of text
    s = spec(DataType.STRING, Order.CDAB, length=2)
    assert decode(s, [0x4142, 0x4344]) == "ABCD"


def test_string_one_char_per_register() -> None:
    s = spec(DataType.STRING, length=4, chars_per_register=1)
    assert encode(s, "OK") == [0x4F, 0x4B, 0, 0]
    # the high byte is ignored
    assert decode(s, [0xFF4F, 0x004B, 0x0000, 0x0041]) == "OK"


def test_string_stops_at_nul_and_truncates() -> None:
    s = spec(DataType.STRING, length=2)
    assert decode(s, [0x4100, 0x4242]) == "A"
    assert encode(s, "ABCDEF") == [0x4142, 0x4344]


# -- bits --------------------------------------------------------------------------------


@pytest.mark.parametrize("bit", range(16))
def test_bool_bit_of_register(bit: int) -> None:
    s = PointSpec("b", Table.INPUT, 3, DataType.BOOL, bit=bit)
    assert s.width == 1
    assert decode(s, [1 << bit]) is True
    assert decode(s, [0xFFFF ^ (1 << bit)]) is False
    assert encode(s, True) == [1 << bit]
    assert encode(s, False) == [0]


def test_bool_without_bit_is_bit_zero() -> None:
    s = PointSpec("b", Table.HOLDING, 0, DataType.BOOL)
    assert decode(s, [0x0001]) is True
    assert decode(s, [0x0002]) is False


@pytest.mark.parametrize("table", [Table.COIL, Table.DISCRETE])
def test_bit_tables(table: Table) -> None:
    s = PointSpec("c", table, 7, DataType.BOOL)
    assert table.is_bit
    assert s.width == 1 and s.end == 8
    assert decode_bits(s, [True]) is True
    assert decode_bits(s, [False]) is False


def test_widths() -> None:
    for data_type, width in WIDTHS.items():
        assert spec(data_type).width == width
    assert spec(DataType.STRING, length=10).width == 10
    assert PointSpec("x", Table.HOLDING, 100, DataType.FLOAT64).end == 104


# -- scale and offset --------------------------------------------------------------------


def test_engineering_scale_and_offset() -> None:
    s = spec(DataType.INT16, scale=0.1, offset=-40.0)
    assert engineering(s, 650) == pytest.approx(25.0)
    assert engineering(spec(DataType.UINT16), 7) == 7  # no scaling keeps the integer
    assert isinstance(engineering(spec(DataType.UINT16), 7), int)
    assert engineering(s, True) is True
    assert engineering(spec(DataType.STRING, scale=2.0, length=1), "x") == "x"


def test_engineering_is_none_where_no_finite_value_results() -> None:
    s = spec(DataType.FLOAT32, scale=10.0, offset=1.0)
    assert engineering(s, 2.0) == 21.0
    assert engineering(s, math.nan) is None  # the decoder marks a NaN register bad first
    assert engineering(spec(DataType.FLOAT64, scale=1e300), 1e10) is None  # past the floats
    assert engineering(spec(DataType.FLOAT32), math.inf) == math.inf  # unscaled: untouched


def test_raw_from_engineering_rounds_and_clamps() -> None:
    s = spec(DataType.INT16, scale=0.1, offset=-40.0)
    assert raw_from_engineering(s, 25.0) == 650
    assert raw_from_engineering(s, 1e9) == 32767
    assert raw_from_engineering(s, -1e9) == -32768
    assert raw_from_engineering(spec(DataType.UINT16, scale=0.01), -5.0) == 0
    assert raw_from_engineering(spec(DataType.UINT32, scale=0.001), 1.2345) == 1234


def test_raw_from_engineering_non_finite() -> None:
    s = spec(DataType.INT32)
    assert raw_from_engineering(s, math.nan) == 0
    assert raw_from_engineering(s, math.inf) == 2**31 - 1
    assert raw_from_engineering(s, -math.inf) == -(2**31)
    f = spec(DataType.FLOAT32, scale=2.0)
    assert math.isnan(float(raw_from_engineering(f, math.nan)))
    assert raw_from_engineering(f, 3.0) == 1.5


def test_raw_from_engineering_bool_and_string() -> None:
    b = PointSpec("b", Table.HOLDING, 0, DataType.BOOL, bit=3)
    assert raw_from_engineering(b, 1.0) is True
    assert raw_from_engineering(b, 0) is False
    assert raw_from_engineering(spec(DataType.STRING, length=2), "AB") == "AB"


@pytest.mark.parametrize("data_type", list(INT_RANGES))
@given(raw=st.integers(-(2**15), 2**15 - 1), scale=st.sampled_from([0.1, 0.01, 2.0, 1.0]))
def test_scale_round_trip(data_type: DataType, raw: int, scale: float) -> None:
    lo, hi = INT_RANGES[data_type]
    raw = min(max(raw, lo), hi)
    s = spec(data_type, scale=scale, offset=-12.5)
    assert raw_from_engineering(s, engineering(s, raw)) == raw


# -- NaN from the wire -------------------------------------------------------------------


def test_nan_reply_is_a_bad_reading() -> None:
    nan = spec(DataType.FLOAT32)
    good = PointSpec("q", Table.HOLDING, 2, DataType.UINT16, scale=0.5)
    req = Request(Table.HOLDING, 0, 3, (nan, good))
    samples = decode_request(req, [0x7FC0, 0x0000, 10], 1234)
    assert samples[0].quality is Quality.BAD
    assert samples[0].reason is Reason.INVALID_VALUE
    assert samples[0].value is None
    assert samples[1].quality is Quality.GOOD
    assert (samples[1].raw, samples[1].value, samples[1].ts_us) == (10, 5.0, 1234)


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize(
    "data_type", [t for t in DataType if t not in (DataType.BOOL, DataType.STRING)]
)
@given(words=st.lists(st.integers(0, 0xFFFF), min_size=6, max_size=6), offset=st.integers(0, 2))
def test_block_decoder_agrees_with_decode(
    order: Order, data_type: DataType, words: list[int], offset: int
) -> None:
    """The fast path used on every poll decodes exactly what decode() does."""
    from drivers.modbus_codec import block_decoder

    spec = PointSpec("p", Table.HOLDING, 0, data_type, order=order)
    block = struct.pack(">6H", *words)
    fast = block_decoder(spec)(block, 2 * offset)
    slow = decode(spec, words[offset : offset + spec.width])
    assert (
        (math.isnan(fast) and math.isnan(slow))
        if isinstance(slow, float) and math.isnan(slow)
        else fast == slow
    )


# -- compiled requests belong to their driver ----------------------------------------------


def test_decoding_leaves_no_state_in_the_module() -> None:
    """Compiled requests live in the driver that sends them: decoding request after
    request (as every reload brings new ones) grows no table of the module."""
    import drivers.modbus_common as common

    def tables() -> dict[str, int]:
        return {
            name: len(value)
            for name, value in vars(common).items()
            if isinstance(value, dict | list | set) and not name.startswith("__")
        }

    points = (spec(DataType.FLOAT32), PointSpec("q", Table.HOLDING, 2, DataType.UINT16, scale=0.5))
    words = [0x4148, 0x0000, 10]
    decode_request(Request(Table.HOLDING, 0, 3, points), words, 0)  # shared per-type decoders
    before = tables()
    for n in range(50):
        req = Request(Table.HOLDING, 0, 3, points)
        assert decode_request(req, words, n)[1].value == 5.0
        executor = PlanExecutor("dev", "tcp://x", 1, [req], timeout=1.0)
        assert executor.compiled[0].decode(words, n)[0].value == pytest.approx(12.5)
    assert tables() == before
