"""Config loading: every problem reported at once, exactly, as FILE:LINE:COL: path: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import app as cli
from gateway.config.loader import ConfigError, LoadedConfig, load_config

HEAD = """\
gateway:
  id: gw-1
  site: plant-a
"""

METER = """\
devices:
  - id: meter
    driver: modbus_tcp
    host: 192.0.2.10
    points:
      - {id: v, ref: 30001, type: float32}
"""


@pytest.fixture(autouse=True)
def _no_profile_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # profiles are looked up beside the config only, whatever the caller's environment says
    monkeypatch.delenv("METROGATE_PROFILES", raising=False)


def write(tmp_path: Path, text: str, name: str = "gw.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def load(tmp_path: Path, text: str) -> LoadedConfig:
    return load_config(write(tmp_path, text))


# (case id, config text, expected lines with {f} for the file)
CASES: list[tuple[str, str, list[str]]] = [
    (
        "a scale or offset that is no finite number (every value would be infinite)",
        HEAD + METER.replace("type: float32}", "type: float32, scale: .inf, offset: .nan}"),
        [
            "{f}:9:44: devices[0].points[0].scale: scale must be a finite number (got inf)",
            "{f}:9:57: devices[0].points[0].offset: offset must be a finite number (got nan)",
        ],
    ),
    (
        "a date that does not exist (a bare ValueError inside the YAML parser before)",
        HEAD + "instruments:\n  - id: T-1\n    calibrations:\n      - date: 2026-02-30\n",
        ["{f}:7:15: (top): YAML: cannot read '2026-02-30': day is out of range for month"],
    ),
    (
        "an integer past Python's digit limit",
        HEAD + "mqtt:\n  url: mqtt://broker:1883\n  keepalive: " + "9" * 5000 + "\n",
        [
            "{f}:6:14: (top): YAML: cannot read '" + "9" * 40 + "…': "
            "Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"
        ],
    ),
    (
        "unknown key with suggestion",
        HEAD + "mqtt:\n  url: mqtt://broker:1883\n  keepalvie: 30\n",
        ["{f}:6:3: mqtt.keepalvie: unknown key 'keepalvie' (did you mean 'keepalive'?)"],
    ),
    (
        "unknown key without suggestion",
        HEAD + "frobnicate: 1\n",
        ["{f}:4:1: frobnicate: unknown key 'frobnicate'"],
    ),
    (
        "misspelt point key",
        HEAD + METER + "      - {id: i, ref: 30003, type: float32, scael: 0.1}\n",
        ["{f}:10:44: devices[0].points[1].scael: unknown key 'scael' (did you mean 'scale'?)"],
    ),
    (
        "wrong type",
        HEAD + METER + "    port: five-oh-two\n",
        [
            "{f}:10:5: devices[0].port: Input should be a valid integer, unable to parse "
            "string as an integer (got 'five-oh-two')"
        ],
    ),
    (
        "bad duration",
        HEAD + METER + "    poll: often\n",
        [
            "{f}:10:5: devices[0].poll: invalid duration 'often': use seconds or a number "
            "with a unit ms, s, m, h or d (e.g. '500ms', '30s', '5m', '2h', '7d') (got 'often')"
        ],
    ),
    (
        "bad enum value",
        HEAD + METER + "    order: ABDC\n",
        [
            "{f}:10:5: devices[0].order: Input should be 'ABCD', 'DCBA', 'BADC' or 'CDAB' "
            "(got 'ABDC')"
        ],
    ),
    (
        "missing required key",
        "gateway:\n  id: gw-1\n",
        ["{f}:1:1: gateway.site: missing required key 'site'"],
    ),
    (
        "missing section",
        METER,
        ["{f}:1:1: gateway: missing required key 'gateway'"],
    ),
    (
        "missing device key",
        HEAD + "devices:\n  - id: meter\n    driver: modbus_tcp\n    points: []\n",
        ["{f}:5:5: devices[0].host: missing required key 'host'"],
    ),
    (
        "topic-unsafe id",
        "gateway:\n  id: gw/1\n  site: plant-a\n",
        [
            "{f}:2:3: gateway.id: use only letters, digits, '_', '.' and '-' "
            "(it becomes a topic level) (got 'gw/1')"
        ],
    ),
    (
        "missing driver",
        HEAD + "devices:\n  - id: meter\n    host: 192.0.2.10\n",
        ["{f}:5:5: devices[0]: missing required key 'driver'"],
    ),
    (
        "duplicate device ids",
        HEAD
        + METER
        + textwrap.indent(
            "- id: meter\n  driver: modbus_tcp\n  host: 192.0.2.11\n"
            "  points:\n    - {id: v, ref: 30001}\n",
            "  ",
        ),
        ["{f}:10:5: devices[1].id: device id 'meter' is also devices[0]"],
    ),
    (
        "duplicate point ids",
        HEAD + METER + "      - {id: v, ref: 30011, type: float32}\n",
        ["{f}:10:10: devices[0].points[1].id: point id 'v' is also points[0] of this device"],
    ),
    (
        "overlapping registers",
        HEAD + METER + "      - {id: low, table: input, address: 1}\n",
        ["{f}:10:33: devices[0].points[1].address: input 1..1 overlaps point 'v' (0..1)"],
    ),
    (
        "overlapping bits of one register",
        HEAD
        + METER
        + "      - {id: a, ref: 40001, type: bool, bit: 3}\n"
        + "      - {id: b, ref: 40001, type: bool, bit: 3}\n"
        + "      - {id: c, ref: 40001, type: bool, bit: 4}\n",
        ["{f}:11:17: devices[0].points[2].ref: holding 0..0 overlaps point 'a' (0..0)"],
    ),
    (
        "string without length",
        HEAD + METER + "      - {id: name, table: holding, address: 0, type: string}\n",
        ["{f}:10:9: devices[0].points[1]: string points need length (registers) ≥ 1"],
    ),
    (
        "length on a number",
        HEAD + METER + "      - {id: n, table: holding, address: 0, type: uint32, length: 2}\n",
        [
            "{f}:10:9: devices[0].points[1]: length is the register count of a string point; "
            "a uint32 point is 2 register(s) wide by its type"
        ],
    ),
    (
        "bit on a float",
        HEAD + METER + "      - {id: n, table: holding, address: 0, type: float32, bit: 2}\n",
        [
            "{f}:10:9: devices[0].points[1]: bit selects one bit of a register: only for "
            "bool points on holding/input"
        ],
    ),
    (
        "number in a coil table",
        HEAD + METER + "      - {id: n, table: coil, address: 0, type: uint16}\n",
        ["{f}:10:9: devices[0].points[1]: coil points hold single bits: type must be bool"],
    ),
    (
        "ref and address together",
        HEAD + METER + "      - {id: n, ref: 40001, table: holding, address: 0}\n",
        ["{f}:10:9: devices[0].points[1]: give either ref or table+address, not both"],
    ),
    (
        "unquoted coil reference",
        HEAD + METER + "      - {id: n, ref: 00001}\n",
        [
            "{f}:10:9: devices[0].points[1]: reference 1: write 5 or 6 digits, e.g. 40001 "
            'or 400001 (quote coil references: ref: "00001")'
        ],
    ),
    (
        "past the last address",
        HEAD + METER + "      - {id: n, table: holding, address: 65535, type: float32}\n",
        [
            "{f}:10:9: devices[0].points[1]: holding 65535 + 2 register(s) runs past the "
            "last address 65535"
        ],
    ),
    (
        "point in a hole",
        HEAD + METER + "    holes:\n      - {table: input, start: 0, end: 3}\n",
        ["{f}:9:17: devices[0].points[0].ref: v: address 0 lies in a hole the device rejects"],
    ),
    (
        "string wider than a request",
        HEAD
        + METER
        + "      - {id: name, table: holding, address: 0, type: string, length: 20}\n"
        + "    max_registers: 16\n",
        ["{f}:10:36: devices[0].points[1].address: name: 20 wide, more than 16 per request"],
    ),
    (
        "timeout not below poll",
        HEAD + METER + "    poll: 500ms\n    timeout: 0.5\n",
        ["{f}:11:5: devices[0].timeout: timeout 0.5s must be shorter than the poll period 0.5s"],
    ),
    (
        "two devices claim one unit",
        HEAD
        + METER
        + textwrap.indent(
            "- id: second\n  driver: modbus_tcp\n  host: 192.0.2.10\n  port: 502\n"
            "  points:\n    - {id: v, ref: 30001}\n",
            "  ",
        ),
        ["{f}:10:5: devices[1].unit: 192.0.2.10:502 unit 1 is already claimed by devices[0]"],
    ),
    (
        "mixed framing on one port",
        HEAD
        + METER
        + textwrap.indent(
            "- id: second\n  driver: modbus_tcp\n  host: 192.0.2.10\n  unit: 2\n"
            "  framing: rtu\n  points:\n    - {id: v, ref: 30001}\n",
            "  ",
        ),
        [
            "{f}:14:5: devices[1].framing: 192.0.2.10:502 is used with framing 'socket' "
            "by devices[0]"
        ],
    ),
    (
        "device without points",
        HEAD + "devices:\n  - id: meter\n    driver: modbus_tcp\n    host: 192.0.2.10\n",
        ["{f}:5:5: devices[0].points: a Modbus device needs at least one point"],
    ),
    (
        "environment variable missing",
        HEAD + "mqtt:\n  username: ${METROGATE_TEST_UNSET_USER}\n",
        ["{f}:5:3: mqtt.username: environment variable METROGATE_TEST_UNSET_USER is not set"],
    ),
    (
        "failed substitution reported once",
        HEAD + METER.replace("192.0.2.10", "${METROGATE_TEST_UNSET_HOST}"),
        ["{f}:7:5: devices[0].host: environment variable METROGATE_TEST_UNSET_HOST is not set"],
    ),
    (
        "bad substitution",
        HEAD + "mqtt:\n  username: ${1abc}\n",
        ["{f}:5:3: mqtt.username: bad substitution ${1abc}: use ${NAME} or ${file:PATH}"],
    ),
    (
        "malformed YAML",
        "gateway:\n  id: gw-1\n  site: [plant-a\nmqtt: {}\n",
        ["{f}:4:5: (top): YAML: while parsing a flow sequence expected ',' or ']', but got ':'"],
    ),
    (
        "tab indentation",
        "gateway:\n  id: gw-1\n\tsite: plant-a\n",
        [
            "{f}:3:1: (top): YAML: while scanning for the next token found character '\\t' "
            "that cannot start any token"
        ],
    ),
    (
        "duplicate YAML keys",
        HEAD + "  id: gw-2\n",
        [
            '{f}:4:3: (top): YAML: while constructing a mapping found duplicate key "id" '
            'with value "gw-2" (original value: "gw-1")'
        ],
    ),
    (
        "not a mapping",
        "- gateway\n",
        [
            "{f}:1:1: (top): the config must be a YAML mapping of sections "
            "(gateway, devices, ...); got a list"
        ],
    ),
    (
        "empty file",
        "",
        [
            "{f}:1:1: (top): the config must be a YAML mapping of sections "
            "(gateway, devices, ...); the file is empty"
        ],
    ),
    (
        "several problems at once, in file order",
        "gateway:\n  id: gw-1\nmqtt:\n  url: http://broker\n  inflight: 0\n",
        [
            "{f}:1:1: gateway.site: missing required key 'site'",
            "{f}:4:3: mqtt.url: write mqtt://host[:port] or mqtts://host[:port] "
            "(got 'http://broker')",
            "{f}:5:3: mqtt.inflight: Input should be greater than or equal to 1 (got 0)",
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    assert problems(path) == [line.replace("{f}", str(path)) for line in expected]


def test_base_is_valid(tmp_path: Path) -> None:
    # every case above breaks this valid file in one way
    loaded = load(tmp_path, HEAD + METER)
    (device,) = loaded.config.devices
    (spec,) = device.specs()
    assert (spec.table.value, spec.address, spec.type.value) == ("input", 0, "float32")
    assert loaded.warnings == []
    assert len(loaded.sha256) == 64


def test_unknown_driver(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + METER.replace("driver: modbus_tcp", "driver: modbus_tpc"))
    (line,) = problems(path)
    # the list of drivers grows with the drivers
    assert line.startswith(f"{path}:6:5: devices[0].driver: unknown driver 'modbus_tpc' ")
    assert "'modbus_tcp'" in line


def test_defaults_and_units(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        HEAD
        + "outbox:\n  max_bytes: 64MiB\n  max_age: 7d\n"
        + METER
        + "    poll: 2s\n    timeout: 300ms\n",
    ).config
    assert cfg.outbox.max_bytes == 64 * 1024 * 1024
    assert cfg.outbox.max_age == 7 * 86400
    assert cfg.devices[0].poll == 2.0 and cfg.devices[0].timeout == 0.3
    assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883
    assert cfg.gateway.state_dir == tmp_path / "state"  # relative to the config file


def test_environment_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METROGATE_TEST_USER", "gw-user")
    monkeypatch.setenv("METROGATE_TEST_HOST", "192.0.2.77")
    monkeypatch.delenv("METROGATE_TEST_UNSET", raising=False)
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret-from-file\n", encoding="utf-8")
    cfg = load(
        tmp_path,
        HEAD
        + "mqtt:\n"
        + "  url: mqtt://${METROGATE_TEST_UNSET:-broker.local}:1883\n"
        + "  username: ${METROGATE_TEST_USER}\n"
        + f"  password: ${{file:{secret}}}\n"
        + METER.replace("192.0.2.10", "${METROGATE_TEST_HOST}"),
    ).config
    assert cfg.mqtt.host == "broker.local"
    assert cfg.mqtt.username == "gw-user"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(cfg.mqtt)
    assert cfg.devices[0].host == "192.0.2.77"


def test_relative_paths_are_taken_from_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = tmp_path / "etc" / "mg", tmp_path / "cwd"
    for d, secret in ((here, "from-beside-the-config"), (elsewhere, "from-the-cwd")):
        write(d, f"{secret}\n", "secrets/mqtt.pass")
        write(d, "W\n", "unit.txt")  # decoys for the profile's ${file:unit.txt}
    write(here, "V\n", "profiles/unit.txt")
    write(here, PROFILE.replace("unit: V}", "unit: '${file:unit.txt}'}"), "profiles/meter.yaml")
    write(
        here,
        HEAD
        + "  state_dir: var/state\n"
        + "mqtt:\n  password: ${file:secrets/mqtt.pass}\n"
        + "  tls: {ca: tls/ca.pem, cert: tls/gw.pem, key: tls/gw.key}\n"
        + "outbox: {path: var/outbox.db}\n"
        + "signing: {key: keys/gateway.key}\n"
        + USES_PROFILE,
    )
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "etc" / "mg" / "gw.yaml").config
    base = here.resolve()
    assert cfg.gateway.state_dir == base / "var/state"
    assert cfg.outbox.path == base / "var/outbox.db"
    assert cfg.signing.key == cfg.signing_key == base / "keys/gateway.key"
    assert cfg.mqtt.tls is not None
    assert (cfg.mqtt.tls.ca, cfg.mqtt.tls.cert, cfg.mqtt.tls.key) == (
        base / "tls/ca.pem",
        base / "tls/gw.pem",
        base / "tls/gw.key",
    )
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "from-beside-the-config"
    # a ${file:} in a profile is taken from the profile's directory
    assert getattr(cfg.devices[0].points[0], "unit", None) == "V"

    # absolute paths stay as written
    absolute = tmp_path / "abs"
    write(
        here,
        HEAD
        + f"  state_dir: {absolute}/state\n"
        + f"outbox: {{path: {absolute}/outbox.db}}\nsigning: {{key: {absolute}/gw.key}}\n",
        "abs.yaml",
    )
    cfg = load_config(here / "abs.yaml").config
    assert cfg.gateway.state_dir == absolute / "state"
    assert (cfg.outbox.path, cfg.signing.key) == (absolute / "outbox.db", absolute / "gw.key")


def test_secret_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pass"
    path = write(tmp_path, HEAD + f"mqtt:\n  password: ${{file:{missing}}}\n")
    assert problems(path) == [
        f"{path}:5:3: mqtt.password: cannot read secret file '{missing}': No such file or directory"
    ]


def test_secret_values_are_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METROGATE_TEST_PORT", "hunter2")
    path = write(tmp_path, HEAD + METER + "    port: ${METROGATE_TEST_PORT}\n    unit: x\n")
    assert problems(path) == [
        f"{path}:10:5: devices[0].port: Input should be a valid integer, unable to parse "
        "string as an integer",
        # a value written in the file is shown
        f"{path}:11:5: devices[0].unit: Input should be a valid integer, unable to parse "
        "string as an integer (got 'x')",
    ]


PROFILE = """\
description: test meter
driver: modbus_tcp
defaults:
  order: CDAB
  poll: 1s
points:
  - {id: voltage, ref: 30001, type: float32, unit: V}
  - {id: energy, ref: 30003, type: uint32, unit: Wh}
"""

USES_PROFILE = """\
devices:
  - id: pm
    driver: modbus_tcp
    host: 192.0.2.20
    profile: meter
    poll: 5s
    points:
      - {id: status, ref: 30101}
"""


def test_profile_expands(tmp_path: Path) -> None:
    write(tmp_path, PROFILE, "profiles/meter.yaml")
    cfg = load(tmp_path, HEAD + USES_PROFILE).config
    (dev,) = cfg.devices
    assert [p.id for p in dev.points] == ["voltage", "energy", "status"]
    assert dev.order.value == "CDAB"  # from the profile's defaults
    assert dev.poll == 5.0  # the device's own key wins
    assert dev.profile is None


def test_profile_error_is_located_in_the_profile(tmp_path: Path) -> None:
    profile = write(
        tmp_path, PROFILE.replace("type: uint32", "type: unit32"), "profiles/meter.yaml"
    )
    path = write(tmp_path, HEAD + USES_PROFILE.replace("ref: 30101", "ref: 30101, scael: 1"))
    assert problems(path) == [
        f"{path}:11:34: devices[0].points[2].scael: unknown key 'scael' (did you mean 'scale'?)",
        f"{profile}:8:30: devices[0].points[1].type: Input should be 'bool', 'int16', "
        "'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64' or 'string' "
        "(got 'unit32')",
    ]


def test_profile_cross_checks_are_located(tmp_path: Path) -> None:
    # a clash inside the profile points at the profile; one with the device's own
    # points at the config file
    profile = write(tmp_path, PROFILE.replace("ref: 30003", "ref: 30002"), "profiles/meter.yaml")
    path = write(tmp_path, HEAD + USES_PROFILE.replace("ref: 30101", "ref: 30003"))
    assert problems(path) == [
        f"{path}:11:22: devices[0].points[2].ref: input 2..2 overlaps point 'energy' (1..2)",
        f"{profile}:8:18: devices[0].points[1].ref: input 1..2 overlaps point 'voltage' (0..1)",
    ]


def test_profile_unknown_key(tmp_path: Path) -> None:
    profile = write(tmp_path, PROFILE + "registers: []\n", "profiles/meter.yaml")
    text = HEAD + USES_PROFILE.replace("driver: modbus_tcp", "driver: modbus_tcp\n    unit: 3")
    path = write(tmp_path, text.replace("profile: meter", "profile: meter\n    foo: 1"))
    lines = problems(path)
    assert lines == [
        f"{path}:10:5: devices[0].foo: unknown key 'foo'",
        f"{profile}:9:1: registers: unknown profile key "
        "(allowed: description, driver, defaults, points)",
    ]


def test_unknown_profile(tmp_path: Path) -> None:
    write(tmp_path, PROFILE, "profiles/meter.yaml")
    path = write(tmp_path, HEAD + USES_PROFILE.replace("profile: meter", "profile: metre"))
    (line,) = problems(path)
    assert line.startswith(f"{path}:8:5: devices[0].profile: unknown profile 'metre' (known: ")
    assert "meter" in line


# -- the command line --------------------------------------------------------------------


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + METER)
    assert cli.main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok — gateway gw-1 at plant-a, 1 devices, 1 points, 0 instruments\n"
    assert err == ""


def test_check_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + METER + "    poll: 1s\n    timeout: 2s\n    prot: 502\n")
    assert cli.main(["check", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:12:5: devices[0].prot: unknown key 'prot' (did you mean 'port'?)",
        f"{path}: 1 problem(s); nothing started",
    ]


def test_check_reports_cross_checks_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        HEAD + METER + "      - {id: v, ref: 30002}\n" + "    poll: 1s\n    timeout: 2s\n",
    )
    assert cli.main(["check", "-c", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{path}:10:10: devices[0].points[1].id: point id 'v' is also points[0] of this device",
        f"{path}:10:17: devices[0].points[1].ref: input 1..1 overlaps point 'v' (0..1)",
        f"{path}:12:5: devices[0].timeout: timeout 2s must be shorter than the poll period 1s",
        f"{path}: 3 problem(s); nothing started",
    ]


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert cli.main(["check", "-c", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{path}:1:1: (top): cannot read: No such file or directory",
        f"{path}: 1 problem(s); nothing started",
    ]


def test_check_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    instruments = textwrap.dedent(
        """\
        instruments:
          - id: PT-1
            unit: bar
            calibrations:
              - certificate: C-1
                date: 2020-01-01
                valid_until: 2021-01-01
                correction: {kind: offset, b: 0.01, u_b: 0.001}
        """
    )
    path = write(tmp_path, HEAD + instruments + METER)
    assert cli.main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.endswith(", 1 warning(s)\n")
    (warning,) = err.splitlines()
    assert warning.startswith(f"{path}:10:9: instruments[0].calibrations[0].valid_until: warning: ")


def test_plan_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        HEAD
        + METER.replace("192.0.2.10", "127.0.0.1")
        + "      - {id: i, ref: 30005, type: float32}\n"
        + "      - {id: name, ref: 40101, type: string, length: 4}\n"
        + "      - {id: run, ref: '00001'}\n",
    )
    assert cli.main(["plan", "-c", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        "meter (modbus_tcp, tcp://127.0.0.1:502/1): 3 request(s) per poll for 4 point(s), every 1s",
        "  unit 1: coil 0..0 (1 bits): run",
        "  unit 1: input 0..5 (6 registers): v, i",
        "  unit 1: holding 100..103 (4 registers): name",
        "total: 3 request(s) per cycle",
    ]


def test_schema_command(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert cli.main(["schema", "-o", str(out)]) == 0
    assert '"title": "metrogate configuration"' in out.read_text(encoding="utf-8")


def test_a_profile_or_device_whose_parts_have_the_wrong_shape_is_located(
    tmp_path: Path,
) -> None:
    """Found by the config fuzz: each of these ended the check with a TypeError."""
    profile = write(
        tmp_path, PROFILE.replace("defaults:\n  order: CDAB\n  poll: 1s\n", "defaults: [1]\n"),
        "profiles/meter.yaml",
    )  # fmt: skip
    path = write(tmp_path, HEAD + USES_PROFILE)
    assert problems(path) == [f"{profile}:3:1: defaults: a profile's defaults is a mapping "
                              "of device keys"]  # fmt: skip
    write(tmp_path, PROFILE, "profiles/meter.yaml")
    # the "- " of the device's one point lost: its points are a mapping, not a list
    path = write(tmp_path, HEAD + USES_PROFILE.replace("      - {id: status", "      {id: status"))
    (line,) = problems(path)
    assert line.startswith(f"{path}:10:5: devices[0].points: Input should be a valid list"), line


def test_yaml_tags_are_refused_where_they_are(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD.replace("id: gw-1", "id: !!python/object/apply:os.system [x]"))
    assert problems(path) == [
        f"{path}:2:7: (top): YAML: unknown YAML tag 'tag:yaml.org,2002:python/object/apply:"
        "os.system' (a configuration uses none)"
    ]


def test_a_duration_past_the_floats_is_refused_not_raised(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "mqtt:\n  url: mqtt://broker:1883\n  keepalive: 1\n"
                 "  backoff_max: " + "9" * 400 + "\n")  # fmt: skip
    (line,) = problems(path)
    assert line.startswith(f"{path}:7:3: mqtt.backoff_max: a duration must be a "
                           "finite number of seconds ≥ 0, not 99999"), line  # fmt: skip


def test_standard_tags_on_collections_keep_their_items_located(tmp_path: Path) -> None:
    """ruamel keeps no position for the items of ``!!omap`` (found when reading this
    change again: a TypeError before); they are located where the mapping starts."""
    path = write(tmp_path, 'gateway: !!omap [id: gw-1, site: "a b"]\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}:1:10: gateway.site: "), line


def test_an_ascii_request_of_characters_that_are_no_byte_is_located(tmp_path: Path) -> None:
    """Found by the config fuzz: ``request: Ā`` ended the check with a UnicodeEncodeError
    while the read plan was compiled."""
    path = write(
        tmp_path,
        HEAD + "buses:\n  - {id: b, port: /dev/ttyUSB0}\ndevices:\n  - id: h\n    driver: ascii\n"
        "    bus: b\n    request: \"\\u0100\\r\"\n    response: '^(?P<value>[0-9.]+)$'\n"
        "    points:\n      - {id: x}\n",
    )
    (line,) = problems(path)
    assert line.startswith(f"{path}:10:5: devices[0].request: 'Ā' (U+0100) is not one byte"), line
