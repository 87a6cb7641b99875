"""Users and keys: Ed25519 key pairs, user ids, request signing and verification.

A user id is the hex encoding of the user's 32-byte Ed25519 public key (64 hex characters).
Private keys live in key files (:func:`save_key_pair`, :func:`load_key_pair`; mode 0600), never
in a shared table.

Every state-changing HTTP request between flowplex processes is signed the one way
:func:`sign_request` does it: HTTP Message Signatures (RFC 9421) with ``alg="ed25519"``, the
signer's user id as ``keyid``, covering ``"@method" "@path" "@query" "content-digest"`` (a
``Content-Digest``, RFC 9530, of the body), with ``created`` and a random ``nonce``. Path and
query rather than the whole target URI, so that a request still verifies behind a proxy that
rewrites the host or the scheme. :func:`verify_request` checks such a request and answers the
signer's user id: the signature, the body digest, the age (``max_age`` back, a small skew
ahead) and, through a :class:`NonceCache`, that it was never seen before.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard
from urllib.parse import urlsplit

from .errors import ConfigurationError, KeyFileError, SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "KeyPair",
    "NonceCache",
    "content_digest",
    "generate_key_pair",
    "is_user_id",
    "load_key_pair",
    "load_or_create_key_pair",
    "save_key_pair",
    "sign",
    "sign_request",
    "verify",
    "verify_request",
]

_USER_ID_LEN = 64


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair: ``user_id`` (hex public key) and the raw 32-byte private key."""

    user_id: str
    private_key: bytes

    def __repr__(self) -> str:  # never print the private key
        return f"KeyPair(user_id={self.user_id!r})"

    @classmethod
    def from_private_key(cls, private_key: bytes) -> KeyPair:
        """The key pair of a raw 32-byte Ed25519 private key (its user id derived)."""
        return _key_from_private(private_key)


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


def is_user_id(value: object) -> TypeGuard[str]:
    """True if ``value`` looks like a user id: 64 lowercase hex characters."""
    return isinstance(value, str) and _USER_ID_RE.fullmatch(value) is not None


def sign(private_key: bytes, payload: bytes) -> bytes:
    """The Ed25519 signature of ``payload`` by ``private_key`` (raw 32 bytes)."""
    return _loaded_private_key(private_key).sign(payload)


@functools.lru_cache(maxsize=32)
def _loaded_private_key(private_key: bytes) -> Ed25519PrivateKey:
    # Loading derives the public key: four times the cost of a signature, on every signed
    # request. A process signs with a few keys, so the loaded ones are kept.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        return Ed25519PrivateKey.from_private_bytes(private_key)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Ed25519 private key: {exc}") from exc


def verify(user_id: str, payload: bytes, signature: bytes) -> bool:
    """True if ``signature`` over ``payload`` was made by the key of ``user_id``."""
    from cryptography.exceptions import InvalidSignature

    if not is_user_id(user_id):
        return False
    try:
        _loaded_public_key(user_id).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _loaded_public_key(user_id: str) -> Ed25519PublicKey:
    # A node verifies every signed request: the keys of the users who call it are kept loaded.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(user_id))


def _key_from_private(private_key: bytes) -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = Ed25519PrivateKey.from_private_bytes(private_key)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Ed25519 private key: {exc}") from exc
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return KeyPair(public.hex(), private_key)


# --- key files ---------------------------------------------------------------------------------


def save_key_pair(path: str | os.PathLike[str], key: KeyPair) -> Path:
    """Write ``key`` to a new key file at ``path`` (PKCS#8 PEM, mode 0600), atomically.

    The file appears complete or not at all, and never replaces an existing one (two processes
    creating the same key file race safely: one wins, the other gets :class:`KeyFileError`).
    Missing parent directories are created (mode 0700).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not isinstance(key, KeyPair):
        raise ConfigurationError(f"save_key_pair needs a KeyPair, got {type(key).__name__}.")
    target = Path(path)
    pem = Ed25519PrivateKey.from_private_bytes(key.private_key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600; the link publishes it whole and fails if one exists.
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, target)
        finally:
            os.unlink(tmp)
    except FileExistsError:
        raise KeyFileError(f"key file {target} exists already; not replacing it.") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {target}: {exc}") from None
    return target


def load_key_pair(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair in the key file at ``path`` (as :func:`save_key_pair` writes it).

    Raises :class:`KeyFileError` when the file is missing, unreadable, not an Ed25519 private
    key, or readable by group or others (a key others can read is no proof of identity).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    source = Path(path)
    try:
        mode = source.stat().st_mode
        data = source.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"no key file at {source}.") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {source}: {exc}") from None
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(
            f"key file {source} is readable by others (mode {mode & 0o777:o}); "
            f"run: chmod 600 {source}"
        )
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"key file {source} holds no usable private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"key file {source} holds a {type(private).__name__}, not Ed25519.")
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return _key_from_private(raw)


def load_or_create_key_pair(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair at ``path``, generated and saved there first if there is no file yet."""
    try:
        return load_key_pair(path)
    except KeyFileError:
        if Path(path).exists():
            raise
    try:
        return load_key_pair(save_key_pair(path, generate_key_pair()))
    except KeyFileError:
        if not Path(path).exists():
            raise
        return load_key_pair(path)  # another process created it first


# --- request signatures (RFC 9421) ---------------------------------------------------------------

#: The components every flowplex request signature covers, in this order.
COVERED = ("@method", "@path", "@query", "content-digest")
#: How far in the future a ``created`` may lie (clocks of two machines disagree a little).
MAX_CLOCK_SKEW = 30.0
_LABEL = "sig1"
_USER_ID_RE = re.compile(f"[0-9a-f]{{{_USER_ID_LEN}}}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_\-]{16,128}")
_MEMBER_RE = re.compile(r'\s*([a-z*][a-z0-9_\-.*]*)=\(((?:\s*"[^"\\]*")*)\s*\)((?:;[^,]*)?)\s*$')
_PARAM_RE = re.compile(r';([a-z*][a-z0-9_\-.*]*)=("[^"\\]*"|-?[0-9]{1,15})')
_BYTES_RE = re.compile(r"\s*([a-z*][a-z0-9_\-.*]*)=:([A-Za-z0-9+/=]*):\s*$")


def content_digest(sha256: bytes) -> str:
    """The ``Content-Digest`` header value (RFC 9530) of a body whose SHA-256 is ``sha256``."""
    return "sha-256=:" + base64.b64encode(sha256).decode("ascii") + ":"


def _digest(body: bytes) -> str:
    return content_digest(hashlib.sha256(body).digest())


def _split_target(url: str) -> tuple[str, str]:
    if url.startswith("/"):  # a request target: urlsplit would read "//x/y" as a host
        path, _, query = url.partition("#")[0].partition("?")
        return path, "?" + query
    parts = urlsplit(url)
    return parts.path or "/", "?" + parts.query


def _signature_base(method: str, path: str, query: str, digest: str, params: str) -> bytes:
    lines = [
        f'"@method": {method.upper()}',
        f'"@path": {path}',
        f'"@query": {query}',
        f'"content-digest": {digest}',
        f'"@signature-params": {params}',
    ]
    return "\n".join(lines).encode("utf-8")


def sign_request(
    key: KeyPair,
    method: str,
    url: str,
    body: bytes = b"",
    *,
    created: int | None = None,
    nonce: str | None = None,
    digest: str | None = None,
) -> dict[str, str]:
    """The headers that sign a ``method`` request to ``url`` carrying ``body``, by ``key``.

    ``url`` is a whole URL or just the path and query, exactly as sent on the wire. The answer
    holds ``Content-Digest``, ``Signature-Input`` and ``Signature``; add them to the request.
    ``created`` (Unix seconds) defaults to now and ``nonce`` to a fresh random one. A body
    streamed from elsewhere passes its ``digest`` (:func:`content_digest`) instead.
    """
    if not isinstance(key, KeyPair):
        raise ConfigurationError(f"sign_request needs a KeyPair, got {type(key).__name__}.")
    if not isinstance(method, str) or not method.isalpha():
        raise ConfigurationError(f"not an HTTP method: {method!r}")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ConfigurationError(f"the body to sign must be bytes, got {type(body).__name__}.")
    stamp = int(time.time()) if created is None else int(created)
    nonce = secrets.token_urlsafe(18) if nonce is None else nonce
    if not _NONCE_RE.fullmatch(nonce):
        raise ConfigurationError("a nonce is 16 to 128 characters of [A-Za-z0-9_-].")
    path, query = _split_target(url)
    if digest is None:
        digest = _digest(bytes(body))
    elif body:
        raise ConfigurationError("pass a body or its digest, not both.")
    components = " ".join(f'"{c}"' for c in COVERED)
    params = f'({components});created={stamp};nonce="{nonce}";keyid="{key.user_id}";alg="ed25519"'
    signature = sign(key.private_key, _signature_base(method, path, query, digest, params))
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{_LABEL}={params}",
        "Signature": f"{_LABEL}=:{base64.b64encode(signature).decode('ascii')}:",
    }


class NonceCache:
    """The nonces seen lately, each kept until its request would be too old anyway.

    Bounded (``max_entries``; when full, expired nonces go first, then the oldest) and safe to
    share between threads. A nonce is scoped by its signer, so two signers never collide.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive int, got {max_entries!r}")
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def add(self, signer: str, nonce: str, *, expires: float, now: float) -> bool:
        """Record ``nonce`` of ``signer`` until ``expires``; False if it is there already."""
        key = (signer, nonce)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and seen > now:
                return False
            if len(self._seen) >= self.max_entries:
                self._prune(now)
            self._seen[key] = expires
            self._seen.move_to_end(key)
            return True

    def _prune(self, now: float) -> None:
        for key in [k for k, expires in self._seen.items() if expires <= now]:
            del self._seen[key]
        while len(self._seen) >= self.max_entries:
            self._seen.popitem(last=False)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, item in headers.items():
            if key.lower() == lowered:
                return item
        raise SignatureError(f"the request is not signed: no {name} header.")
    return value


def _parse_input(value: str) -> tuple[str, list[str], dict[str, str | int]]:
    match = _MEMBER_RE.match(value)
    if match is None or "," in value:
        raise SignatureError("Signature-Input is malformed (one signature expected).")
    label, inner, raw_params = match.groups()
    components = re.findall(r'"([^"]*)"', inner)
    params: dict[str, str | int] = {}
    rest = raw_params
    for name, item in _PARAM_RE.findall(raw_params):
        if name in params:
            raise SignatureError(f"Signature-Input repeats the parameter {name!r}.")
        params[name] = item[1:-1] if item.startswith('"') else int(item)
        rest = rest.replace(f";{name}={item}", "", 1)
    if rest.strip():
        raise SignatureError("Signature-Input has malformed parameters.")
    return label, components, params


def verify_request(
    method: str,
    path_and_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    nonces: NonceCache,
    now: float | None = None,
    max_age: float = 300.0,
) -> str:
    """The user id that signed this request, as :func:`sign_request` signs.

    ``path_and_query`` is the request target as received (``/path?query``). Raises
    :class:`SignatureError` when a header is missing or malformed, the body does not match its
    digest, a covered component is missing, ``created`` is older than ``max_age`` seconds or
    more than a few seconds ahead, the nonce was seen before, or the signature is not the
    ``keyid``'s.
    """
    clock = time.time() if now is None else now
    signer, digest = _verify_headers(
        method, path_and_query, headers, nonces=nonces, now=clock, max_age=max_age
    )
    if digest != _digest(bytes(body)):
        raise SignatureError("the body does not match its Content-Digest.")
    return signer


def _verify_headers(
    method: str,
    path_and_query: str,
    headers: Mapping[str, str],
    *,
    nonces: NonceCache,
    now: float,
    max_age: float,
) -> tuple[str, str]:
    """Check everything but the body; the signer and the ``Content-Digest`` the body must match.

    The nonce is spent here: a caller that streams the body checks the digest as it goes.
    """
    raw_input = _header(headers, "Signature-Input")
    raw_signature = _header(headers, "Signature")
    digest = _header(headers, "Content-Digest").strip()
    label, components, params = _parse_input(raw_input)
    sig_match = _BYTES_RE.match(raw_signature)
    if sig_match is None or "," in raw_signature or sig_match.group(1) != label:
        raise SignatureError("Signature is malformed or does not match Signature-Input.")
    if components != list(COVERED):
        wanted = " ".join(f'"{c}"' for c in COVERED)
        raise SignatureError(f"the signature must cover exactly ({wanted}).")
    keyid, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if params.get("alg", "ed25519") != "ed25519":
        raise SignatureError(f"unsupported signature algorithm {params.get('alg')!r}.")
    if not is_user_id(keyid):
        raise SignatureError("the signature's keyid is not a user id.")
    if not isinstance(created, int):
        raise SignatureError("the signature has no created time.")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise SignatureError("the signature has no valid nonce.")
    if created > now + MAX_CLOCK_SKEW:
        raise SignatureError("the signature was created in the future; check the clocks.")
    if created < now - max_age:
        raise SignatureError(f"the signature is older than {max_age:g} s.")
    expires = params.get("expires")
    if isinstance(expires, int) and expires < now:
        raise SignatureError("the signature has expired.")
    if not digest.startswith("sha-256=:"):
        raise SignatureError("Content-Digest must be a sha-256 digest.")
    try:
        signature = base64.b64decode(sig_match.group(2), validate=True)
    except ValueError:
        raise SignatureError("Signature is not valid base64.") from None
    path, query = _split_target(path_and_query)
    params_text = raw_input.strip()[len(label) + 1 :]
    base = _signature_base(method, path, query, digest, params_text)
    if not verify(keyid, base, signature):
        raise SignatureError("the signature does not verify (wrong key, or a changed request).")
    if not nonces.add(keyid, nonce, expires=created + max_age + MAX_CLOCK_SKEW, now=now):
        raise SignatureError("the request was replayed (its nonce was seen before).")
    return keyid, digest
