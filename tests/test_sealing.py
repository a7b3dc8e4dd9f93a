"""Credentials at rest: AES-256-GCM under an HKDF-derived key, the field name as associated data."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lockgate.sealing import INFO, MARKER, Sealer, SealError, is_sealed
from lockgate.secret import Secret

SALT = Secret("a-long-random-salt-key-0123456789")
CANARY = "sk-provider-canary-1f2e3d4c5b6a"


def test_round_trip_of_any_json_value() -> None:
    sealer = Sealer(SALT)
    for value in (CANARY, {"type": "service_account", "private_key": CANARY}, ["a", 1], 42):
        sealed = sealer.seal("api_key", value)
        assert is_sealed(sealed) and sealer.open("api_key", sealed) == value


def test_stored_form_holds_no_plaintext_and_a_fresh_nonce_each_time() -> None:
    sealer = Sealer(SALT)
    first, second = sealer.seal("api_key", CANARY), sealer.seal("api_key", CANARY)
    assert set(first) == {MARKER} and first[MARKER].startswith("v1:")
    assert CANARY not in str(first) and CANARY.encode() not in base64.b64decode(first[MARKER][3:])
    assert first != second  # 96-bit random nonce per value


def test_the_key_is_hkdf_sha256_of_the_salt_key_with_its_own_info() -> None:
    """Interoperable and one key per purpose (security.md K3): anyone with the salt key and this spec can open it."""
    sealed = Sealer(SALT).seal("api_key", CANARY)[MARKER]
    blob = base64.b64decode(sealed.removeprefix("v1:"))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"lockgate/model-credentials/v1").derive(
        SALT.reveal().encode()
    )
    assert INFO == b"lockgate/model-credentials/v1"
    assert AESGCM(key).decrypt(blob[:12], blob[12:], b"api_key") == f'"{CANARY}"'.encode()
    with pytest.raises(Exception):  # noqa: B017 - the raw salt key is never the key
        AESGCM(SALT.reveal().encode()[:32]).decrypt(blob[:12], blob[12:], b"api_key")


def test_another_salt_key_does_not_open_and_says_nothing_of_the_value() -> None:
    sealed = Sealer(SALT).seal("api_key", CANARY)
    with pytest.raises(SealError) as caught:
        Sealer(Secret("another-salt-key-0123456789abc")).open("api_key", sealed)
    assert CANARY not in str(caught.value) and "api_key" in str(caught.value)


def test_a_value_moved_to_another_field_does_not_open() -> None:
    sealer = Sealer(SALT)
    with pytest.raises(SealError):
        sealer.open("aws_secret_access_key", sealer.seal("api_key", CANARY))


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB"),  # tag changed
        lambda text: "v2:" + text[3:],  # unknown version
        lambda text: "v1:not base64!!",
        lambda text: "v1:" + base64.b64encode(b"short").decode(),
    ],
)
def test_damaged_values_do_not_open(damage: object) -> None:
    sealer = Sealer(SALT)
    sealed = sealer.seal("api_key", CANARY)
    assert callable(damage)
    with pytest.raises(SealError):
        sealer.open("api_key", {MARKER: damage(sealed[MARKER])})


def test_shapes() -> None:
    assert not is_sealed("v1:abc") and not is_sealed({MARKER: 1}) and not is_sealed({MARKER: "x", "y": 1})
    with pytest.raises(SealError):
        Sealer(SALT).open("api_key", "plain")
    with pytest.raises(ValueError):
        Sealer(Secret(""))
    assert SALT.reveal() not in repr(Sealer(SALT))


def test_a_context_binds_the_value_as_well() -> None:
    sealer = Sealer(SALT)
    sealed = sealer.seal("api_key", CANARY, b'["db-1","https://api.example.com"]')
    assert sealer.open("api_key", sealed, b'["db-1","https://api.example.com"]') == CANARY
    for other in (b'["db-1","https://attacker.example"]', b""):
        with pytest.raises(SealError):
            sealer.open("api_key", sealed, other)
