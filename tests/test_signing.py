"""Request signing (RFC 9421, Ed25519): the core in ``flowplex.identity``, the ``httpx`` auth that
signs every request, and the one FastAPI dependency that checks them.

Each test either round-trips a signed request or changes one thing an attacker could change
(method, path, query, body, key, time, nonce, headers) and expects the check to refuse it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from flowplex._asgi import RequestSigning, SignedCaller, compose_app
from flowplex._httpsign import SigningAuth
from flowplex.errors import ConfigurationError, KeyFileError, SignatureError
from flowplex.identity import (
    KeyPair,
    NonceCache,
    generate_key_pair,
    load_key_pair,
    load_or_create_key_pair,
    save_key_pair,
    sign_request,
    verify_request,
)
from mesh_helpers import Server

NOW = 1_800_000_000
ALICE = generate_key_pair()
MALLORY = generate_key_pair()


def _verify(
    headers: dict[str, str],
    *,
    method: str = "POST",
    target: str = "/register?x=1",
    body: bytes = b'{"a": 1}',
    nonces: NonceCache | None = None,
    now: float = NOW,
) -> str:
    return verify_request(
        method,
        target,
        headers,
        body,
        nonces=NonceCache() if nonces is None else nonces,
        now=now,
        max_age=300,
    )


def _signed(key: KeyPair = ALICE, **kw: Any) -> dict[str, str]:
    kw.setdefault("created", NOW)
    return sign_request(key, "POST", "http://127.0.0.1:9/register?x=1", b'{"a": 1}', **kw)


def test_round_trip_answers_the_signer() -> None:
    headers = _signed()
    assert _verify(headers) == ALICE.user_id
    assert headers["Content-Digest"].startswith("sha-256=:")
    assert headers["Signature"].startswith("sig1=:")
    params = headers["Signature-Input"]
    assert params.startswith('sig1=("@method" "@path" "@query" "content-digest");created=')
    assert f'keyid="{ALICE.user_id}"' in params and 'alg="ed25519"' in params


def test_a_whole_url_and_the_bare_target_sign_the_same_request() -> None:
    headers = sign_request(ALICE, "post", "/register?x=1", b'{"a": 1}', created=NOW)
    assert _verify(headers) == ALICE.user_id


def test_header_names_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in _signed().items()}
    assert _verify(headers) == ALICE.user_id


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("body", b'{"a": 2}'),
        ("target", "/register?x=2"),
        ("target", "/update/node?x=1"),
        ("target", "/register"),
        ("method", "PUT"),
    ],
)
def test_a_tampered_request_is_refused(change: str, value: Any) -> None:
    with pytest.raises(SignatureError):
        _verify(_signed(), **{change: value})


def test_a_replaced_digest_does_not_verify() -> None:
    headers = _signed()
    headers["Content-Digest"] = sign_request(ALICE, "POST", "/", b"other")["Content-Digest"]
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(headers, body=b"other")


def test_a_replay_is_refused() -> None:
    nonces = NonceCache()
    headers = _signed()
    assert _verify(headers, nonces=nonces) == ALICE.user_id
    with pytest.raises(SignatureError, match="replayed"):
        _verify(headers, nonces=nonces, now=NOW + 1)


def test_the_same_nonce_of_two_signers_is_two_nonces() -> None:
    nonces = NonceCache()
    nonce = "n" * 24
    assert _verify(_signed(ALICE, nonce=nonce), nonces=nonces) == ALICE.user_id
    assert _verify(_signed(MALLORY, nonce=nonce), nonces=nonces) == MALLORY.user_id


def test_an_expired_signature_is_refused() -> None:
    with pytest.raises(SignatureError, match="older than 300 s"):
        _verify(_signed(), now=NOW + 301)
    assert _verify(_signed(), now=NOW + 299) == ALICE.user_id


def test_a_future_dated_signature_is_refused() -> None:
    with pytest.raises(SignatureError, match="future"):
        _verify(_signed(), now=NOW - 3600)
    assert _verify(_signed(), now=NOW - 5) == ALICE.user_id  # within the clock skew


def test_a_signature_by_another_key_is_refused() -> None:
    forged = _signed(MALLORY)
    # Mallory claims to be Alice: keyid swapped, signature still Mallory's.
    forged["Signature-Input"] = forged["Signature-Input"].replace(MALLORY.user_id, ALICE.user_id)
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(forged)


@pytest.mark.parametrize("missing", ["Signature", "Signature-Input", "Content-Digest"])
def test_a_missing_header_is_refused(missing: str) -> None:
    headers = _signed()
    del headers[missing]
    with pytest.raises(SignatureError, match=f"no {missing} header"):
        _verify(headers)


@pytest.mark.parametrize(
    ("header", "value", "match"),
    [
        ("Signature-Input", 'sig1=("@method");created=1', "cover exactly"),
        ("Signature-Input", "garbage", "malformed"),
        ("Signature", "sig1=:!!!:", "malformed"),
        ("Signature", "sig2=:AAAA:", "does not match"),
        ("Content-Digest", "md5=:AAAA:", "sha-256"),
    ],
)
def test_malformed_headers_are_refused(header: str, value: str, match: str) -> None:
    headers = _signed()
    headers[header] = value
    with pytest.raises(SignatureError, match=match):
        _verify(headers)


def test_dropping_the_nonce_is_refused() -> None:
    headers = _signed(nonce="abcdefghijklmnop")
    headers["Signature-Input"] = headers["Signature-Input"].replace(';nonce="abcdefghijklmnop"', "")
    with pytest.raises(SignatureError, match="nonce"):
        _verify(headers)


def test_bad_arguments_to_sign_request() -> None:
    with pytest.raises(ConfigurationError):
        sign_request("key", "POST", "/")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        sign_request(ALICE, "PO ST", "/")
    with pytest.raises(ConfigurationError):
        sign_request(ALICE, "POST", "/", nonce="short")


def test_the_nonce_cache_is_bounded_and_forgets_expired_nonces() -> None:
    cache = NonceCache(max_entries=3)
    for i in range(3):
        assert cache.add("k", f"n{i}", expires=10, now=0)
    assert not cache.add("k", "n0", expires=10, now=1)
    assert cache.add("k", "n3", expires=30, now=11)  # the full cache drops the expired ones
    assert len(cache) == 1
    for i in range(10):
        cache.add("k", f"m{i}", expires=100, now=20)
    assert len(cache) == 3
    with pytest.raises(ConfigurationError):
        NonceCache(0)


def test_the_nonce_cache_admits_a_nonce_once_across_threads() -> None:
    cache = NonceCache()
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        wins.append(cache.add("k", "same", expires=10, now=0))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


# --- key files ---------------------------------------------------------------------------------


def test_a_key_file_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = save_key_pair(tmp_path / "keys" / "alice.pem", ALICE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_pair(path) == ALICE
    assert [p.name for p in path.parent.iterdir()] == ["alice.pem"]  # no temp file left


def test_a_key_file_is_never_replaced(tmp_path: Path) -> None:
    path = save_key_pair(tmp_path / "k.pem", ALICE)
    with pytest.raises(KeyFileError, match="exists already"):
        save_key_pair(path, MALLORY)
    assert load_key_pair(path) == ALICE


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = save_key_pair(tmp_path / "k.pem", ALICE)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_pair(path)


def test_missing_and_garbage_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        load_key_pair(tmp_path / "none.pem")
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a key")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="no usable private key"):
        load_key_pair(bad)


def test_load_or_create_makes_the_key_once(tmp_path: Path) -> None:
    first = load_or_create_key_pair(tmp_path / "node.pem")
    assert load_or_create_key_pair(tmp_path / "node.pem") == first


# --- over HTTP: SigningAuth and signed_caller ----------------------------------------------------


def _app(signing: RequestSigning | None = None) -> FastAPI:
    app = compose_app(signing=signing)

    @app.post("/write")
    async def write(caller: SignedCaller, request: Request) -> dict[str, Any]:
        return {"caller": caller, "body": (await request.body()).decode()}

    @app.put("/items/{name}")
    async def put(name: str, caller: SignedCaller) -> dict[str, Any]:
        return {"caller": caller, "name": name}

    return app


def _client(app: FastAPI, key: KeyPair | None = ALICE) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        auth=SigningAuth(key) if key is not None else None,
    )


def test_signed_requests_pass_and_unsigned_ones_get_401() -> None:
    async def run() -> None:
        app = _app()
        async with _client(app) as signed, _client(app, None) as plain:
            ok = await signed.post("/write?q=a%20b", content=b"hello")
            assert ok.status_code == 200
            assert ok.json() == {"caller": ALICE.user_id, "body": "hello"}
            put = await signed.put("/items/x%20y", json={"k": 1})
            assert put.json() == {"caller": ALICE.user_id, "name": "x y"}
            refused = await plain.post("/write", content=b"hello")
            assert refused.status_code == 401
            assert "not signed" in refused.json()["detail"]

    asyncio.run(run())


def test_a_replayed_or_tampered_request_gets_401() -> None:
    async def run() -> None:
        app = _app()
        headers = sign_request(ALICE, "POST", "/write", b"hello")
        async with _client(app, None) as plain:
            first = await plain.post("/write", content=b"hello", headers=headers)
            assert first.status_code == 200
            again = await plain.post("/write", content=b"hello", headers=headers)
            assert again.status_code == 401 and "replayed" in again.json()["detail"]
            fresh = sign_request(ALICE, "POST", "/write", b"hello")
            tampered = await plain.post("/write", content=b"HELLO", headers=fresh)
            assert tampered.status_code == 401 and "Content-Digest" in tampered.json()["detail"]

    asyncio.run(run())


def test_a_signed_body_over_the_limit_gets_413() -> None:
    async def run() -> None:
        async with _client(_app(RequestSigning(max_body=10))) as signed:
            resp = await signed.post("/write", content=b"x" * 11)
            assert resp.status_code == 413
            assert (await signed.post("/write", content=b"x" * 10)).status_code == 200

    asyncio.run(run())


def test_signing_auth_signs_a_sync_client_against_a_real_server() -> None:
    server = Server(_app())
    try:
        with httpx.Client(base_url=server.url, auth=SigningAuth(ALICE)) as client:
            resp = client.post("/write?a=1", content=b"over tcp")
            assert resp.json() == {"caller": ALICE.user_id, "body": "over tcp"}
            unsigned = httpx.post(server.url + "/write", content=b"over tcp")
            assert unsigned.status_code == 401
    finally:
        server.stop()


def test_insecure_mode_accepts_unsigned_requests_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowplex.security"):
        app = _app(RequestSigning(insecure=True))
    assert "insecure" in caplog.text

    async def run() -> None:
        async with _client(app, None) as plain, _client(app) as signed:
            unsigned = await plain.post("/write", content=b"x")
            assert unsigned.json()["caller"] is None
            assert (await signed.post("/write", content=b"x")).json()["caller"] == ALICE.user_id
            bad = sign_request(MALLORY, "POST", "/write", b"x")
            forged = await plain.post("/write", content=b"y", headers=bad)
            assert forged.status_code == 401  # a signature present is still checked

    asyncio.run(run())


def test_request_signing_validates_its_settings() -> None:
    with pytest.raises(ConfigurationError):
        RequestSigning(window=0)
    with pytest.raises(ConfigurationError):
        RequestSigning(max_body=-1)
    with pytest.raises(ConfigurationError):
        SigningAuth("not a key")  # type: ignore[arg-type]
