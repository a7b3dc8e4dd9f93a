"""Credentials at rest: values sealed with AES-256-GCM under a key derived from the salt key.

The salt key is the operator's ``LITELLM_SALT_KEY`` (LiteLLM's name; read by :mod:`lockgate.config`). It is
never used as a key itself: each purpose derives its own with HKDF-SHA256 and its own ``info`` string
(security.md K3), so this key encrypts provider credentials and nothing else::

    key    = HKDF-SHA256(ikm=salt key, salt=none, info=b"lockgate/model-credentials/v1", length=32)
    aad    = field  (or field ‖ 0x00 ‖ context)
    sealed = {"lockgate_encrypted": "v1:" + base64(nonce[12] ‖ AES-256-GCM(key, nonce, JSON(value), aad))}

The field name (``api_key``, ...) is the associated data, with the caller's ``context`` when it gives one
(:mod:`lockgate.dbmodels` binds the model's id and where its traffic goes): a sealed value moved to another
field, or another context, does not open. Opening with another salt key, or a damaged value, raises
:class:`SealError`, which never carries the value.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import orjson

from lockgate.secret import Secret

__all__ = ["INFO", "MARKER", "SealError", "Sealer", "is_sealed"]

INFO = b"lockgate/model-credentials/v1"
MARKER = "lockgate_encrypted"
_VERSION = "v1:"
_NONCE = 12


class SealError(Exception):
    """A sealed value does not open: it was sealed under another salt key, for another field, or is damaged."""


def is_sealed(value: object) -> bool:
    """Whether ``value`` has the shape of a sealed value (``{"lockgate_encrypted": "v1:..."}``)."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARKER), str)


class Sealer:
    """Seals and opens credential values for one salt key; prints as ``Sealer(*****)``."""

    __slots__ = ("_aead",)

    def __init__(self, salt_key: Secret) -> None:
        if not salt_key:
            raise ValueError("the salt key is empty")
        # imported here: ~10 MB of Rust bindings a gateway without models added through the API never needs
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO)
        self._aead = AESGCM(hkdf.derive(salt_key.reveal().encode()))

    def seal(self, field: str, value: Any, context: bytes = b"") -> dict[str, str]:
        """``value`` (anything JSON can hold) sealed for ``field`` (and ``context``)."""
        nonce = os.urandom(_NONCE)
        ciphertext = self._aead.encrypt(nonce, orjson.dumps(value), _aad(field, context))
        return {MARKER: _VERSION + base64.b64encode(nonce + ciphertext).decode("ascii")}

    def open(self, field: str, sealed: Any, context: bytes = b"") -> Any:
        """The value :meth:`seal` sealed for ``field`` and ``context``; :class:`SealError` if it does not open."""
        if not is_sealed(sealed):
            raise SealError(f"{field} is not a sealed value")
        text: str = sealed[MARKER]
        if not text.startswith(_VERSION):
            raise SealError(f"{field} is sealed in an unknown format")
        try:
            blob = base64.b64decode(text[len(_VERSION) :], validate=True)
        except (binascii.Error, ValueError):
            raise SealError(f"{field} is damaged (not base64)") from None
        if len(blob) < _NONCE + 16:
            raise SealError(f"{field} is damaged (too short)")
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], _aad(field, context))
        except InvalidTag:
            raise SealError(f"{field} does not open with this salt key (another key, or damaged)") from None
        return orjson.loads(plain)

    def __repr__(self) -> str:
        return "Sealer(*****)"


def _aad(field: str, context: bytes) -> bytes:
    return field.encode() + b"\x00" + context if context else field.encode()
