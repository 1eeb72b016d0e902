"""Key files: generation, permissions, loading, sign/verify round trip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.wire.keys import (
    KeyExistsError,
    KeyFileError,
    KeyPermissionError,
    generate_keypair,
    load_public_keys,
    load_signer,
)
from gateway.wire.signing import SignatureError, key_id, verify_payload


def test_generate_writes_private_0600_and_public(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sorted(p.name for p in pair.private_path.parent.iterdir()) == [
        "gateway.key",
        "gateway.pub",
    ]  # no temp files left behind
    signer = load_signer(pair.private_path)
    assert signer.kid == pair.kid
    assert list(load_public_keys(pair.public_path)) == [pair.kid]


def test_private_key_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pair = generate_keypair(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600


def test_round_trip_sign_and_verify_with_loaded_keys(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path)
    signer = load_signer(pair.private_path)
    keys = load_public_keys(tmp_path)
    payload = signer.sign_payload(b'{"v":1}')
    assert verify_payload(payload, keys) == (b'{"v":1}', pair.kid)
    with pytest.raises(SignatureError) as err:
        verify_payload(payload.replace(b'"v":1', b'"v":2'), keys)
    assert err.value.kind == "bad_signature"


def test_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path)
    with pytest.raises(KeyExistsError):
        generate_keypair(tmp_path)
    assert load_signer(first.private_path).kid == first.kid
    second = generate_keypair(tmp_path, overwrite=True)
    assert second.kid != first.kid
    assert load_signer(second.private_path).kid == second.kid


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_refuses_group_or_world_accessible_private_key(tmp_path: Path, mode: int) -> None:
    pair = generate_keypair(tmp_path)
    pair.private_path.chmod(mode)
    with pytest.raises(KeyPermissionError) as err:
        load_signer(pair.private_path)
    assert err.value.path == pair.private_path
    assert err.value.mode == mode
    assert str(pair.private_path) in str(err.value)
    assert f"{mode:04o}" in str(err.value)


def test_accepts_0400_private_key(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path)
    pair.private_path.chmod(0o400)
    assert load_signer(pair.private_path).kid == pair.kid


def test_missing_or_garbage_key_files_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        load_signer(tmp_path / "absent.key")
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"not a key")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_signer(junk)
    pair = generate_keypair(tmp_path / "k")
    with pytest.raises(KeyFileError):
        load_public_keys(pair.private_path)  # a private key is not a public key file
    with pytest.raises(KeyFileError):
        load_public_keys(tmp_path / "empty-dir-does-not-exist")


def test_load_public_keys_from_dir_and_files(tmp_path: Path) -> None:
    a = generate_keypair(tmp_path / "a")
    b = generate_keypair(tmp_path / "b")
    pubdir = tmp_path / "platform"
    pubdir.mkdir()
    (pubdir / "a.pub").write_bytes(a.public_path.read_bytes())
    (pubdir / "b.pub").write_bytes(b.public_path.read_bytes())
    (pubdir / "README").write_text("not a key, ignored in a directory")
    keys = load_public_keys(pubdir)
    assert set(keys) == {a.kid, b.kid}
    assert key_id(keys[a.kid]) == a.kid
    assert set(load_public_keys([a.public_path, b.public_path])) == {a.kid, b.kid}
