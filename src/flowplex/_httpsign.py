"""Signing outgoing HTTP requests: an ``httpx.Auth`` that adds the headers of
:func:`flowplex.identity.sign_request` to every request a client sends."""

from __future__ import annotations

from collections.abc import Generator

import httpx

from .errors import ConfigurationError
from .identity import KeyPair, sign_request

__all__ = ["SigningAuth"]


class SigningAuth(httpx.Auth):
    """Sign every request with ``key`` (RFC 9421 over method, path, query and body digest).

    Pass it as ``auth=`` to an ``httpx.Client`` or ``httpx.AsyncClient``: the body is read
    before signing (a streamed body is buffered), and what is signed is the target exactly as
    it goes on the wire.
    """

    requires_request_body = True

    def __init__(self, key: KeyPair) -> None:
        if not isinstance(key, KeyPair):
            raise ConfigurationError(f"SigningAuth needs a KeyPair, got {type(key).__name__}.")
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the signature headers, then send the request once."""
        target = request.url.raw_path.decode("ascii")
        request.headers.update(sign_request(self.key, request.method, target, request.content))
        yield request
