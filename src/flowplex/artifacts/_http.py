"""The op store over HTTP: the ``POST /v1/...`` routes and streaming ``/v1/op_bytes``.

Wire models are pydantic; every client mistake is a 4xx whose JSON ``detail`` names the
problem, and the ``X-Flowplex-Error`` header names the error class so that clients re-raise
it. Routes that touch the database are plain functions (run in the thread pool); the
streaming upload is async so that a large body is written as it arrives.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from .._asgi import PROBLEM_RESPONSES, BodyLimit, RequestSigning, signed_caller, signed_headers
from ..errors import BackendError, FlowplexError
from ..identity import content_digest
from ._errors import HTTP_STATUS, InvalidRequestError
from ._names import check_name
from ._savers import CHUNK_SIZE, ArtifactReader
from ._store import OpStore
from ._version import Version

__all__ = ["ERROR_HEADER", "create_app", "create_router"]

#: The response header naming the flowplex error class of a failed request.
ERROR_HEADER = "X-Flowplex-Error"


def _parse_version(value: object) -> Version:
    if isinstance(value, Version):
        return value
    return Version.parse(value)  # type: ignore[arg-type]  # parse names a non-string


def _b64decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError(f"bytes must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidRequestError(f"bytes is not valid base64: {exc}") from None


OpName = Annotated[str, AfterValidator(lambda v: check_name("op name", v))]
PipelineName = Annotated[str, AfterValidator(lambda v: check_name("pipeline name", v))]
WireVersion = Annotated[
    Version,
    PlainValidator(_parse_version),
    WithJsonSchema({"type": "string", "description": "<major>.<minor>.<patch>_<UTC time>"}),
]
Base64Bytes = Annotated[
    bytes, PlainValidator(_b64decode), WithJsonSchema({"type": "string", "format": "base64"})
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OpRequest(_Body):
    """Names one op (``get_all_versions_of_op``, ``get_version_numbers``)."""

    desired_op_name: OpName


class LinksRequest(_Body):
    """A downstream and an upstream op (``get_validated_links``)."""

    downstream_op_name: OpName
    upstream_op_name: OpName


class OpBytesRequest(_Body):
    """An op version whose bytes to read (``get_op_bytes_for_version``)."""

    desired_op_name: OpName
    version: WireVersion


class SaveOpBytesRequest(_Body):
    """Bytes (base64) of an op version to save (``save_op_bytes``)."""

    op_name: OpName
    version: WireVersion
    data: Base64Bytes = Field(alias="bytes")


class RegisterLinkRequest(_Body):
    """An upstream op version and the downstream op validated with it (or null)."""

    downstream_op_name: OpName | None = None
    upstream_op_name: OpName
    upstream_op_version: WireVersion


class PipelineRequest(_Body):
    """Names one pipeline (``pipeline_exists``)."""

    pipeline_name: PipelineName


class RegisterPipelineRequest(_Body):
    """A pipeline and its last op (``register_new_pipeline``)."""

    pipeline_name: PipelineName
    last_op_name: OpName


def _status(exc: FlowplexError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 503 if isinstance(exc, BackendError) else 400


@contextmanager
def _as_http() -> Iterator[None]:
    """Turn flowplex errors into HTTP errors that carry their class name."""
    try:
        yield
    except FlowplexError as exc:
        raise HTTPException(
            _status(exc), detail=str(exc), headers={ERROR_HEADER: type(exc).__name__}
        ) from exc


def create_router(store: OpStore) -> APIRouter:
    """The op store's routes on ``store``, as a router to include in any FastAPI app."""
    router = APIRouter(tags=["opstore"], responses=PROBLEM_RESPONSES)
    _add_v1_routes(router, store)
    _add_streaming_routes(router, store)
    return router


#: The routes that change the store need a signed request (401 otherwise).
_SIGNED = [Depends(signed_caller)]


def _add_v1_routes(router: APIRouter, store: OpStore) -> None:
    """The POST routes, same paths and JSON shapes (plus ``get_version_numbers``)."""

    @router.post("/v1/get_all_versions_of_op")
    def get_all_versions_of_op(body: OpRequest) -> dict[str, Any] | None:
        """Every registered version of an op, or null if it has none."""
        with _as_http():
            versions = store.get_all_versions_of_op(body.desired_op_name)
        if versions is None:
            return None
        return {"op_name": body.desired_op_name, "all_versions": [str(v) for v in versions]}

    @router.post("/v1/get_version_numbers")
    def get_version_numbers(body: OpRequest) -> dict[str, Any] | None:
        """Every registered version of an op with its number (flowplex extension)."""
        with _as_http():
            infos = store.get_version_numbers(body.desired_op_name)
        if not infos:
            return None
        return {
            "op_name": body.desired_op_name,
            "versions": [{"version": str(i.version), "number": str(i.number)} for i in infos],
        }

    @router.post("/v1/get_validated_links")
    def get_validated_links(body: LinksRequest) -> dict[str, Any] | None:
        """The upstream versions a downstream op was validated with, or null."""
        with _as_http():
            versions = store.get_validated_links(body.downstream_op_name, body.upstream_op_name)
        if versions is None:
            return None
        return {
            "downstream_op_name": body.downstream_op_name,
            "upstream_op_name": body.upstream_op_name,
            "upstream_versions": [str(v) for v in versions],
        }

    @router.post("/v1/get_op_bytes_for_version")
    def get_op_bytes_for_version(body: OpBytesRequest) -> dict[str, Any]:
        """The saved bytes (base64) of a registered op version."""
        with _as_http():
            registered = store.registered_version(body.desired_op_name, body.version)
            data = store.get_op_bytes_for_version(body.desired_op_name, registered)
        return {
            "op_name": body.desired_op_name,
            "op_version": str(registered),
            "bytes": base64.b64encode(data).decode("ascii"),
        }

    @router.post("/v1/save_op_bytes", dependencies=_SIGNED)
    def save_op_bytes(body: SaveOpBytesRequest) -> dict[str, Any]:
        """Save the bytes (base64) of a registered op version (once: other bytes are 409)."""
        with _as_http():
            store.save_op_bytes(body.op_name, body.version, body.data)
        return {}

    @router.post("/v1/register_valid_link", dependencies=_SIGNED)
    def register_valid_link(body: RegisterLinkRequest) -> dict[str, Any]:
        """Register an upstream op version and the downstream op validated with it."""
        with _as_http():
            store.register_valid_link(
                body.downstream_op_name, body.upstream_op_name, body.upstream_op_version
            )
        return {}

    @router.post("/v1/pipeline_exists")
    def pipeline_exists(body: PipelineRequest) -> dict[str, Any]:
        """Whether a pipeline was registered."""
        with _as_http():
            return {"exists": store.pipeline_exists(body.pipeline_name)}

    @router.post("/v1/register_new_pipeline", dependencies=_SIGNED)
    def register_new_pipeline(body: RegisterPipelineRequest) -> dict[str, Any]:
        """Register a pipeline (again: no change)."""
        with _as_http():
            store.register_new_pipeline(body.pipeline_name, body.last_op_name)
        return {}


def _add_streaming_routes(router: APIRouter, store: OpStore) -> None:
    """Raw bytes in and out, streamed (no base64, no whole artifact in memory)."""

    @router.put("/v1/op_bytes")
    async def put_op_bytes(request: Request, op_name: str, version: str) -> dict[str, Any]:
        """Save the raw request body as the bytes of a registered op version, streaming
        (signed: the body must match the signed ``Content-Digest`` before it is kept)."""
        signed = signed_headers(request)
        with _as_http():
            check_name("op name", op_name)
            registered = await run_in_threadpool(
                store.registered_version, op_name, Version.parse(version)
            )
            writer = await run_in_threadpool(store.open_op_writer, op_name, registered)
        digest = hashlib.sha256()
        try:
            pending = bytearray()
            async for chunk in request.stream():
                pending += chunk
                digest.update(chunk)
                if len(pending) >= CHUNK_SIZE:
                    await run_in_threadpool(writer.write, bytes(pending))
                    pending.clear()
            if pending:
                await run_in_threadpool(writer.write, bytes(pending))
            if signed is not None and signed[1] != content_digest(digest.digest()):
                raise HTTPException(401, detail="the body does not match its Content-Digest.")
            info = await run_in_threadpool(writer.commit)
        except BaseException:
            writer.abort()
            raise
        return {
            "op_name": op_name,
            "op_version": str(registered),
            "size": info.size,
            "sha256": info.sha256,
        }

    @router.get("/v1/op_bytes")
    def get_op_bytes(op_name: str, version: str) -> StreamingResponse:
        """Stream the saved bytes of a registered op version (``X-Content-SHA256`` carries
        their hash; they are checked against it before the first byte is sent)."""
        with _as_http():
            check_name("op name", op_name)
            registered = store.registered_version(op_name, Version.parse(version))
            reader = store.open_op_reader(op_name, registered)
            try:
                reader.verify()
            except BaseException:
                reader.close()
                raise
        headers = {
            "Content-Length": str(reader.info.size),
            "X-Content-SHA256": reader.info.sha256,
            "X-Op-Version": str(registered),
        }
        return StreamingResponse(
            _stream(reader), media_type="application/octet-stream", headers=headers
        )


def _stream(reader: ArtifactReader) -> Iterator[bytes]:
    try:
        yield from reader
    finally:
        reader.close()


def create_app(store: OpStore) -> FastAPI:
    """A self-contained ASGI app serving ``store`` (mount it anywhere, or run it alone).

    Its writes are signed (unless ``store.insecure``) and its bodies limited (413)."""
    app = FastAPI(
        title="flowplex op store",
        description="Versioned op artifacts: versions, validated links, op bytes, pipelines.",
    )
    app.include_router(create_router(store))
    app.add_middleware(
        BodyLimit,
        limit=store.max_request_bytes,
        overrides={"/v1/op_bytes": store.max_artifact_bytes},
    )
    RequestSigning(max_body=store.max_request_bytes, insecure=store.insecure).install(
        app, "the op store"
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # One line per problem, without echoing the input (it may be megabytes of base64).
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()))
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse(
            {"detail": "invalid request: " + "; ".join(problems)},
            status_code=422,
            headers={ERROR_HEADER: InvalidRequestError.__name__},
        )

    return app
