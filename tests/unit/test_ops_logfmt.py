"""Structured log lines (logfmt and JSON) with secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, SecretStr

from gateway.common.logs import configure_logging, mask_secrets
from gateway.common.types import secret_values
from tests.logfmt import parse_logfmt


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("connect failed: password=hunter2 host=x", "hunter2"),
        ('config {"password": "hunter2"}', "hunter2"),
        ("token: s3cr3t-tok, retrying", "s3cr3t-tok"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("url mqtt://gw1:hunter2@broker:1883 refused", "hunter2"),
        ("INFLUX_TOKEN=abcdef", "abcdef"),
        ("api_key='k-123'", "k-123"),
    ],
)
def test_secret_values_are_masked(text: str, leak: str) -> None:
    masked = mask_secrets(text)
    assert leak not in masked and "***" in masked


def test_ordinary_text_is_untouched() -> None:
    text = "device dev1 failing: timeout after 100 ms (unit 3, keys dir /etc/keys)"
    assert mask_secrets(text) == text


def test_logfmt_lines_with_extras_and_masking(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "text", secrets=["pa55w0rd"], stream=out)
    log = logging.getLogger("metrogate.test")
    log.info("device %s failing: %s", "dev1", "no answer", extra={"device": "dev1"})
    log.warning("broker refused user gw1 with pa55w0rd")
    log.debug("not shown at info")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert 'msg="device dev1 failing: no answer"' in lines[0]
    assert "level=info" in lines[0] and "logger=metrogate.test" in lines[0]
    assert "device=dev1" in lines[0]
    assert "pa55w0rd" not in lines[1] and "***" in lines[1]


def test_json_lines_parse_and_hide_exception_secrets(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    log = logging.getLogger("metrogate.test")
    try:
        raise ConnectionError("login with password=hunter2 refused")
    except ConnectionError:
        log.exception("store write failed", extra={"store": "influx"})
    doc = json.loads(out.getvalue())
    assert doc["level"] == "error" and doc["msg"] == "store write failed"
    assert doc["store"] == "influx" and "ts" in doc
    assert "ConnectionError" in doc["exc"] and "hunter2" not in doc["exc"]


def test_journald_lines_have_no_timestamp(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    logging.getLogger("metrogate.test").info("hello")
    assert out.getvalue().startswith("level=info ")


def test_logfmt_lines_read_back_exactly(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    message = 'ingest stopped: {"received": 3, "note": "a \\"quoted\\" word"}\tand a tab'
    logging.getLogger("metrogate.test").info(message, extra={"device": "dev 1", "n": 7})
    fields = parse_logfmt(out.getvalue())
    assert fields["msg"] == message
    assert fields["device"] == "dev 1" and fields["n"] == "7"
    assert fields["level"] == "info" and fields["logger"] == "metrogate.test"


def test_secret_values_of_a_model_tree_are_masked(restore_logging: None) -> None:
    class Store(BaseModel):
        token: SecretStr | None = None

    class Cfg(BaseModel):
        password: SecretStr
        stores: list[Store]

    cfg = Cfg(password=SecretStr("pa55"), stores=[Store(), Store(token=SecretStr("t0k"))])
    assert secret_values(cfg) == ["pa55", "t0k"]
    out = io.StringIO()
    configure_logging("info", "text", secrets=secret_values(cfg), stream=out)
    logging.getLogger("metrogate.test").warning("login pa55 refused, token t0k expired")
    assert "pa55" not in out.getvalue() and "t0k" not in out.getvalue()
