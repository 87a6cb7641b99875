"""Users and keys: Ed25519 key pairs, user ids, request signing and verification.

A user id is the hex encoding of the user's 32-byte Ed25519 public key (64 hex characters).
The private key stays in the node's database; :func:`sign` and :func:`verify` let nodes prove
which user sent a request.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = ["KeyPair", "generate_key_pair", "is_user_id", "sign", "verify"]

_USER_ID_LEN = 64


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair: ``user_id`` (hex public key) and the raw 32-byte private key."""

    user_id: str
    private_key: bytes

    def __repr__(self) -> str:  # never print the private key
        return f"KeyPair(user_id={self.user_id!r})"


def generate_key_pair() -> KeyPair:
    """A new random Ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return KeyPair(public.hex(), private)


def is_user_id(value: object) -> bool:
    """True if ``value`` looks like a user id: 64 lowercase hex characters."""
    return (
        isinstance(value, str)
        and len(value) == _USER_ID_LEN
        and all(c in "0123456789abcdef" for c in value)
    )


def sign(private_key: bytes, payload: bytes) -> bytes:
    """The Ed25519 signature of ``payload`` by ``private_key`` (raw 32 bytes)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = Ed25519PrivateKey.from_private_bytes(private_key)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Ed25519 private key: {exc}") from exc
    return key.sign(payload)


def verify(user_id: str, payload: bytes, signature: bytes) -> bool:
    """True if ``signature`` over ``payload`` was made by the key of ``user_id``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not is_user_id(user_id):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(user_id)).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
