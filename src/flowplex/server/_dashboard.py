"""The dashboard of ``flowplex up``: server-rendered pages over the node, its runs, the mesh
and the op store.

Pages (Jinja2 templates in ``templates/``, assets in ``static/``, nothing from the network):

- ``/`` the node: endpoints and their instances (state, queue depth, in flight, dead letters,
  last error). Only for browsers: a request that does not ask for HTML gets the mesh's JSON
  status there, as mesh clients always have.
- ``/ui/instances/{id}``: one instance, its message log and a form that sends it a test message.
- ``/ui/runs`` and ``/ui/runs/{key}``: task-graph runs, each drawn as a graph (SVG) with its
  tasks' status and outputs.
- ``/ui/registry``: this service, its peers, the nodes and flows it lists.
- ``/ui/artifacts``: the op store's ops and versions.

Live updates: each page's ``#live`` region is fetched again every ``refresh_seconds`` by a few
lines of script (``X-Flowplex-Fragment: live`` asks for that region alone).

Sending a test message changes state, so it is guarded against other sites: the form carries a
token made when the server starts (a page of another origin cannot read it), and a request whose
``Origin`` (or ``Sec-Fetch-Site``) names another site is refused. A browser holds no key, so
the form cannot be signed like the node's API: it is accepted from a browser on this machine only
(a loopback client), whatever address ``flowplex up`` listens on; from elsewhere, call the node's
signed API.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .._version import __version__
from ..db import redact
from ..errors import FlowError, FlowplexError, FlowTimeoutError, PermissionDeniedError
from ..flows import FlowProxy, InstanceAddress
from ..runtime import Client, Node
from . import _views

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..artifacts import OpStore
    from ..engine import FlowStore
    from ..mesh import MeshService

__all__ = ["STATIC_DIR", "STATIC_PREFIX", "Dashboard", "docs_router"]

#: The package folders of the templates and of the assets (CSS, script, Swagger UI).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where the assets are served.
STATIC_PREFIX = "/ui/static"

#: The longest a test message may wait for its reply.
MAX_SEND_TIMEOUT = 120.0
#: The data shown in the send form the first time.
SAMPLE_DATA = '{\n  "number": 1234\n}'

_NAV = [
    ("/", "Node", "node"),
    ("/ui/runs", "Runs", "runs"),
    ("/ui/registry", "Registry", "registry"),
    ("/ui/artifacts", "Artifacts", "artifacts"),
    ("/docs", "API", "docs"),
]


def wants_html(request: Request) -> bool:
    """True when the client asks for a page (a browser's ``Accept: text/html,...``)."""
    headers = request.headers
    return "text/html" in headers.get("accept", "") or "x-flowplex-fragment" in headers


class Dashboard:
    """The dashboard's pages over ``node`` (and its runs, in the database ``db_url``), the
    ``mesh`` service and the ``opstore`` when given. :meth:`router` gives the routes;
    :meth:`close` releases what the pages opened."""

    def __init__(
        self,
        node: Node,
        db_url: str,
        *,
        mesh: MeshService | None = None,
        opstore: OpStore | None = None,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.node = node
        self.db_url = db_url
        self.mesh = mesh
        self.opstore = opstore
        self.refresh_seconds = refresh_seconds
        #: The token every form carries (see the module doc).
        self.token = secrets.token_urlsafe(32)
        self._runs: FlowStore | None = None
        self._runs_lock = threading.Lock()
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(ago=_views.ago, stamp=_views.stamp)
        # The macros are globals, so a page's live region renders alone with them too.
        macros = self.env.get_template("_macros.html").module
        self.env.globals.update({name: getattr(macros, name) for name in ("badge", "short", "who")})

    # -- reading ------------------------------------------------------------------------------

    def runs(self) -> FlowStore:
        """The task-graph run store on the node database (opened on first use)."""
        with self._runs_lock:
            if self._runs is None:
                from ..engine import FlowStore

                self._runs = FlowStore(self.db_url)
            return self._runs

    def close(self) -> None:
        """Release the run store (the node, mesh and op store belong to the caller)."""
        with self._runs_lock:
            if self._runs is not None:
                self._runs.close()
                self._runs = None

    # -- rendering ----------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        name: str,
        page: str,
        title: str,
        context: dict[str, Any],
        status_code: int = 200,
    ) -> HTMLResponse:
        """The page ``name`` (or its ``live`` region alone when the script asks for it)."""
        base = request.scope.get("root_path", "")
        values = {
            "title": title,
            "page": page,
            "base": base,
            "static": base + STATIC_PREFIX,
            "nav": [(base + href, label, key) for href, label, key in _NAV],
            "node_url": self.mesh.state.url if self.mesh is not None else "",
            "db": redact(self.db_url),
            "version": __version__,
            "refresh_url": str(request.url.path)
            + (f"?{request.url.query}" if request.url.query else ""),
            "refresh_ms": int(self.refresh_seconds * 1000),
            **context,
        }
        template = self.env.get_template(name)
        headers = {"Cache-Control": "no-store"}
        if request.headers.get("x-flowplex-fragment") == "live":
            block = template.blocks["live"]
            html = "".join(block(template.new_context(values)))
            return HTMLResponse(html, status_code=status_code, headers=headers)
        return HTMLResponse(template.render(values), status_code=status_code, headers=headers)

    def not_found(self, request: Request, what: str) -> HTMLResponse:
        """A 404 page naming what is missing."""
        return self.render(
            request, "missing.html", "", "Not found", {"what": what}, status_code=404
        )

    # -- routes -------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        """The dashboard's routes (hidden from the OpenAPI schema: they are pages)."""
        router = APIRouter(include_in_schema=False)

        @router.get("/", response_model=None)
        def home(request: Request) -> Response:
            if self.mesh is not None and not wants_html(request):
                return JSONResponse(self.mesh.status())
            view = _views.node_view(self.node)
            counts = self._run_counts()
            context = {
                **view,
                "runs_total": sum(counts.values()),
                "runs_failed": counts.get("FAILED", 0),
            }
            return self.render(request, "overview.html", "node", "Node", context)

        @router.get("/ui", response_model=None)
        def ui_root(request: Request) -> Response:
            return RedirectResponse(request.scope.get("root_path", "") + "/", status_code=307)

        @router.get("/ui/instances/{flow_id}", response_model=None)
        def instance(request: Request, flow_id: str) -> Response:
            return self._instance_page(request, flow_id)

        @router.post("/ui/instances/{flow_id}/send", response_model=None)
        async def send(request: Request, flow_id: str) -> Response:
            refused = _refuse_remote(request) or self._refuse_cross_site(request)
            if refused is not None:
                return refused
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            token = (form.get("token") or [""])[0]
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                return JSONResponse(
                    {
                        "detail": "the form is stale or from elsewhere: reload the page and send "
                        "again."
                    },
                    status_code=403,
                )
            from starlette.concurrency import run_in_threadpool

            data_text = (form.get("data") or [""])[0]
            timeout_text = (form.get("timeout") or ["10"])[0]
            return await run_in_threadpool(
                self._send_page, request, flow_id, data_text, timeout_text
            )

        @router.get("/ui/runs", response_model=None)
        def runs(request: Request, status: str | None = None) -> Response:
            wanted = status.upper() if status else None
            if wanted not in (None, "PENDING", "RUNNING", "COMPLETED", "FAILED"):
                return JSONResponse(
                    {
                        "detail": f"unknown status {status!r}: use PENDING, RUNNING, COMPLETED or "
                        "FAILED."
                    },
                    status_code=422,
                )
            view = _views.runs_view(self.runs(), wanted)
            return self.render(request, "runs.html", "runs", "Runs", view)

        @router.get("/ui/runs/{key:path}", response_model=None)
        def run(request: Request, key: str) -> Response:
            from ..engine import FlowNotFoundError

            try:
                view = _views.run_view(self.runs(), key)
            except FlowNotFoundError:
                return self.not_found(request, f"no task-graph run {key}")
            return self.render(request, "run.html", "runs", f"Run {key}", view)

        @router.get("/ui/registry", response_model=None)
        def registry(request: Request) -> Response:
            if self.mesh is None:
                return self.not_found(request, "this server runs no registry")
            view = _views.registry_view(self.mesh)
            return self.render(request, "registry.html", "registry", "Registry", view)

        @router.get("/ui/artifacts", response_model=None)
        def artifacts(request: Request) -> Response:
            view: dict[str, Any] = {"ops": [], "pipelines": [], "enabled": False}
            if self.opstore is not None:
                view = {**_views.artifacts_view(self.opstore), "enabled": True}
            return self.render(request, "artifacts.html", "artifacts", "Artifacts", view)

        if self.opstore is not None:
            store = self.opstore

            # The op store is mounted at /opstore and has routes only under /v1: its root
            # answers here (a page for browsers, the list of routes for programs).
            @router.get("/opstore", response_model=None)
            @router.get("/opstore/", response_model=None)
            def opstore_index(request: Request) -> Response:
                base = request.scope.get("root_path", "")
                if wants_html(request):
                    return RedirectResponse(base + "/ui/artifacts", status_code=303)
                routes = sorted(
                    f"{method} {base}/opstore{path}"
                    for path, methods in _routes(store.app)
                    for method in sorted(methods)
                )
                return JSONResponse(
                    {"service": "flowplex op store", "routes": routes, "ops": store.list_ops()}
                )

        return router

    # -- pages with logic -----------------------------------------------------------------------

    def _run_counts(self) -> dict[str, int]:
        try:
            return _views.run_counts(self.runs())
        except FlowplexError:
            return {}

    def _instance_page(
        self,
        request: Request,
        flow_id: str,
        result: dict[str, str] | None = None,
        sent_data: str = SAMPLE_DATA,
        timeout: float = 10.0,
        status_code: int = 200,
    ) -> HTMLResponse:
        view = _views.instance_view(self.node, flow_id)
        if view is None:
            return self.not_found(request, f"no flow instance {flow_id} on this node")
        context = {
            **view,
            "result": result,
            "sent_data": sent_data,
            "timeout": f"{timeout:g}",
            "token": self.token,
        }
        # The live region keeps polling the instance page, not the form's address.
        request.scope["path"] = request.scope.get("root_path", "") + f"/ui/instances/{flow_id}"
        return self.render(
            request, "instance.html", "node", f"Instance {flow_id}", context, status_code
        )

    def _send_page(
        self, request: Request, flow_id: str, data_text: str, timeout_text: str
    ) -> HTMLResponse:
        """Send ``data_text`` to the instance, wait for the reply, show the page with it."""
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= MAX_SEND_TIMEOUT:
            problem = f"the timeout must be a number of seconds up to {MAX_SEND_TIMEOUT:g}."
            return self._instance_page(
                request, flow_id, _result("error", "Not sent", problem), data_text, 10.0, 422
            )
        try:
            data = json.loads(data_text)
        except ValueError as exc:
            problem = f"the data is not valid JSON: {exc}"
            return self._instance_page(
                request, flow_id, _result("error", "Not sent", problem), data_text, timeout, 422
            )
        if not isinstance(data, dict):
            problem = 'the data must be a JSON object, like {"number": 1234}.'
            return self._instance_page(
                request, flow_id, _result("error", "Not sent", problem), data_text, timeout, 422
            )
        record = self.node.backend.get_instance(flow_id)
        if record is None:
            return self.not_found(request, f"no flow instance {flow_id} on this node")
        # The message goes as the serving user, the one account the node can act for here
        # (with its key file; without it the node cannot act for that user).
        try:
            client = Client(self.node, record.user_id)
        except PermissionDeniedError as exc:
            return self._instance_page(
                request, flow_id, _result("error", "Not sent", str(exc)), data_text, timeout, 403
            )
        proxy = FlowProxy(
            client,
            InstanceAddress(record.user_id, flow_id),
            flow_endpoint=record.endpoint,
            name="dashboard",
        )
        try:
            future = proxy.get_reply_future(proxy.package_input_message(data))
            reply = future.get_data(timeout=timeout)
        except FlowTimeoutError:
            result = _result(
                "error",
                f"No reply within {timeout:g} s",
                "The message is queued: it runs when a dispatch worker takes it (flowplex up "
                "runs one unless started with --workers 0; flowplex worker runs more).",
            )
        except FlowError as exc:
            result = _result("error", "The flow raised an error", str(exc))
        except FlowplexError as exc:
            result = _result("error", "Not sent", str(exc))
        else:
            text = json.dumps(reply, indent=2, ensure_ascii=False)
            result = _result("ok", "Reply", text)
        return self._instance_page(request, flow_id, result, data_text, timeout)

    def _refuse_cross_site(self, request: Request) -> JSONResponse | None:
        """403 when the browser says the request comes from another site."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return JSONResponse(
                {"detail": "refused: the request comes from another site."}, status_code=403
            )
        origin = request.headers.get("origin")
        if origin is None:  # not sent by every browser for a same-origin form: the token decides
            return None
        if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
            return JSONResponse(
                {"detail": f"refused: origin {origin} is not this dashboard."}, status_code=403
            )
        return None


def _refuse_remote(request: Request) -> JSONResponse | None:
    """403 unless the request comes from this machine (the form is not signed)."""
    host = request.client.host if request.client is not None else ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if local:
        return None
    return JSONResponse(
        {
            "detail": "the dashboard sends test messages for a browser on this machine only; "
            "from elsewhere, send through the node's API with a signed client."
        },
        status_code=403,
    )


def _result(kind: str, title: str, text: str) -> dict[str, str]:
    return {"kind": kind, "title": title, "text": text}


def _routes(app: FastAPI) -> list[tuple[str, set[str]]]:
    """The paths and methods an app documents in its OpenAPI schema."""
    paths = app.openapi().get("paths", {})
    return [(path, {m.upper() for m in methods}) for path, methods in paths.items()]


def docs_router(title: str, openapi_url: str = "/openapi.json") -> APIRouter:
    """``GET /docs``: Swagger UI from the assets shipped in the package (works offline)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs(request: Request) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{title}: API",
            swagger_js_url=f"{base}{STATIC_PREFIX}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{STATIC_PREFIX}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{base}{STATIC_PREFIX}/favicon.svg",
        )

    return router
