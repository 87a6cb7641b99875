"""Where a node's flows come from: a loader callable, and the served endpoints of a node database.

A loader returns flow descriptions ``{"url", "name", "description"?, "author"?, "tags"?}``.
:class:`NodeEndpoints` is the loader of a flowplex node: the endpoints its users serve, named and
described by the default config of each flow class.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..config import resolve_class_path
from ..errors import ClassPathError, ConfigurationError, FlowplexError
from ._records import FlowRecord, flows_from_json

__all__ = ["Loader", "NodeEndpoints", "call_loader", "describe_endpoint", "resolve_loader"]

logger = logging.getLogger("flowplex.mesh")

Loader = Callable[[], Any]


def resolve_loader(loader: Loader | str | None) -> Loader | None:
    """A loader given as a callable or as ``"module:function"``."""
    if loader is None or callable(loader):
        return loader
    if not isinstance(loader, str) or loader.count(":") != 1:
        raise ConfigurationError(
            f"loader must be a callable or a 'module:function' string, got {loader!r}."
        )
    module_name, _, attr = loader.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClassPathError(f"loader {loader!r}: cannot import {module_name!r}: {exc}") from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise ClassPathError(f"loader {loader!r}: {module_name!r} has no function {attr!r}.")
    return func  # type: ignore[no-any-return]


def call_loader(loader: Loader) -> list[FlowRecord]:
    """Call ``loader`` and validate what it returns (a list, or a dict keyed by url)."""
    result = loader()
    # A Loader object of the original registry keeps its flows there.
    flows = getattr(result, "flows", result)
    return flows_from_json(flows)


class NodeEndpoints:
    """A loader listing the endpoints served on a flowplex node database (``db`` URL).

    Each served endpoint becomes the flow ``/endpoints/<endpoint>`` (its URL in the node HTTP
    API), with ``name``, ``description``,
    ``author`` and ``tags`` from the flow class's default config (the endpoint name when the
    class cannot be imported here). Unserved endpoints are left out. Picklable, so it can be
    handed to a service in another process.
    """

    def __init__(self, db: str) -> None:
        from ..db import DatabaseURL

        DatabaseURL.parse(db)  # a ConfigurationError naming the accepted forms
        self.db = db
        self._backend: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"db": self.db}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["db"])  # type: ignore[misc]

    def __call__(self) -> list[dict[str, Any]]:
        from ..runtime import open_backend

        with self._lock:
            if self._backend is None:
                self._backend = open_backend(self.db)
            backend = self._backend
            flows = []
            for user in backend.list_users():
                for ep in backend.list_endpoints(user.user_id):
                    if ep.served:
                        flows.append(describe_endpoint(ep.endpoint, ep.flow_class_name))
            return flows

    def close(self) -> None:
        """Close the database connection (it reopens on the next call)."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def __repr__(self) -> str:
        return f"NodeEndpoints({self.db!r})"


def describe_endpoint(endpoint: str, flow_class_name: str) -> dict[str, Any]:
    """The flow description of a served endpoint, from its class's default config."""
    # Where the node HTTP API answers for it; endpoint names are URL-safe (letters, digits, _-.)
    url = "/endpoints/" + endpoint
    config: dict[str, Any] = {}
    try:
        cls = resolve_class_path(flow_class_name)
        config = dict(cls.get_config())
    except (FlowplexError, AttributeError, TypeError) as exc:
        logger.warning(
            "endpoint %s: cannot read the config of %s: %s", endpoint, flow_class_name, exc
        )

    def text(key: str) -> str | None:
        value = config.get(key)
        return value if isinstance(value, str) else None

    tags = config.get("tags")
    return {
        "url": url,
        "name": text("name") or endpoint,
        "description": text("description"),
        "author": text("author"),
        "tags": [str(t) for t in tags] if isinstance(tags, list) else None,
    }
