"""The mesh's records: flows, nodes and providers, URL normalization and timestamps.

Pure data and functions (no I/O). Every record converts to and from the registry wire format
(``to_json`` / ``from_json``); ``from_json`` validates and raises :class:`MeshInputError` naming
what is wrong, so the HTTP layer and the loaders share one set of rules.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError

__all__ = [
    "LOOPBACK",
    "MISSING_AUTHOR",
    "MISSING_DESCRIPTION",
    "FlowRecord",
    "MeshInputError",
    "NodeRecord",
    "ProviderRecord",
    "canonical_host",
    "dedupe_flows",
    "flows_from_json",
    "iso",
    "nodes_from_json",
    "normalize_flow_url",
    "normalize_service_url",
    "parse_timestamp",
    "service_port",
    "utcnow",
]

#: What a row shows for a flow with no author / no description (stored records keep None).
MISSING_AUTHOR = "missing author"
MISSING_DESCRIPTION = "missing description"


class MeshInputError(ConfigurationError, ValueError):
    """A flow, node or offer description (a request body, a loader's output) is invalid."""


def iso(seconds: float) -> str:
    """``seconds`` since the epoch as an ISO 8601 UTC timestamp with microseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def utcnow() -> str:
    """Now as an ISO 8601 UTC timestamp with microseconds (they sort as strings)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_timestamp(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO timestamp (naive ones are UTC, as the original
    registry wrote them)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _check_timestamp(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or parse_timestamp(value) is None:
        raise MeshInputError(f"{what} must be an ISO 8601 timestamp or null, got {value!r}.")
    return value


#: How every loopback spelling of a host is written (``127.0.0.1`` in any notation included).
LOOPBACK = "localhost"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host of one to four numbers spells, in any notation C's
    ``inet_aton`` (and every browser) accepts: ``127.1``, ``0x7f000001``, ``2130706433``,
    ``0177.0.0.1``; None when ``host`` is not such a number."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(p) for p in parts):
        return None
    numbers = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            if any(c in "89" for c in part):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def canonical_host(host: str) -> str | None:
    """One spelling per host: lower case, no trailing dot, IP addresses in their standard form,
    and ``127.0.0.1`` (in any notation) written ``localhost``; None if ``host`` is no valid
    host name or address."""
    host = host.strip().lower()
    if ":" in host:  # an IPv6 literal (urlsplit has dropped its brackets)
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError:
            return None
        mapped = v6.ipv4_mapped
        if mapped is None:
            return f"[{v6.compressed}]"
        host = str(mapped)
    address = _ipv4(host)
    if address is not None:
        return LOOPBACK if address == ipaddress.IPv4Address("127.0.0.1") else str(address)
    host = host.removesuffix(".")
    if _NUMBER.fullmatch(host.rpartition(".")[2]):
        return None  # ends in a number but is no IPv4 address (e.g. 256.1.1.1): not a host
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return host if _HOST.fullmatch(host) else None


#: Values that are never URLs, although ``str()`` makes text of them.
_NOT_URLS = (bytes, bytearray, bool, int, float, Mapping, list, tuple, set)


def _has_own_str(value: Any) -> bool:
    return any("__str__" in vars(cls) for cls in type(value).__mro__[:-1])


def _url_text(url: Any, what: str) -> str:
    # A URL object (httpx.URL, yarl.URL, pydantic's Url...) is taken by its string form; an
    # object without a __str__ of its own would only give its repr.
    text = ""
    if isinstance(url, str):
        text = url
    elif url is not None and not isinstance(url, _NOT_URLS) and _has_own_str(url):
        text = str(url)
    if not text.strip():
        raise MeshInputError(f"{what} must be a URL like 'http://localhost:3366', got {url!r}.")
    return text.strip()


def normalize_service_url(url: Any, what: str = "url", require_port: bool = False) -> str:
    """The canonical ``scheme://host[:port]`` of a node or registry URL.

    ``url`` is a string or any URL object whose ``str()`` is the URL. The scheme and host are
    lower-cased, the host spelled one way (:func:`canonical_host`: ``http://127.1:3366``,
    ``http://0x7f000001:3366`` and ``http://LOCALHOST:3366/`` are all
    ``http://localhost:3366``), a default port (80, 443) dropped, a trailing ``/`` removed.
    Raises :class:`MeshInputError` for anything that is not an http(s) URL with a host (and a
    port when ``require_port``), or that carries credentials, a path, a query or a fragment.
    """
    text = _url_text(url, what)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise MeshInputError(f"{what} {text!r} has an invalid port.") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise MeshInputError(
            f"{what} {text!r} must be an http(s) URL with a host, like 'http://localhost:3366'."
        )
    if require_port and port is None:
        raise MeshInputError(f"{what} {text!r} needs a port, like 'http://localhost:3366'.")
    if parts.username is not None or parts.password is not None:
        raise MeshInputError(f"{what} {text!r} must not carry credentials.")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise MeshInputError(f"{what} {text!r} must not have a path, query or fragment.")
    host = canonical_host(parts.hostname)
    if host is None:
        raise MeshInputError(f"{what} {text!r} has an invalid host {parts.hostname!r}.")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def service_port(url: str) -> int:
    """The port a canonical service URL listens on (its scheme's default when not written)."""
    parts = urlsplit(url)
    return parts.port or _DEFAULT_PORTS[parts.scheme]


def normalize_flow_url(url: Any, name: Any) -> str:
    """A flow's URL: a leading ``/``, no trailing ``/``; from the name (spaces -> ``-``) if None."""
    if url is None or (isinstance(url, str) and not url.strip("/ ")):
        if not isinstance(name, str) or not name.strip():
            raise MeshInputError("a flow needs a url or a name.")
        url = name.strip().replace(" ", "-")
    if not isinstance(url, str):
        raise MeshInputError(f"a flow url must be a string, got {url!r}.")
    path = url.strip().strip("/")
    if any(c.isspace() for c in path):
        raise MeshInputError(f"flow url {url!r} must not contain whitespace.")
    return "/" + path


def _optional_text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MeshInputError(f"{what} must be a string or null, got {value!r}.")


def _tags(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # the original registry accepted a comma list
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise MeshInputError(f"{what} must be a list of strings or null, got {value!r}.")


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A flow a node offers: where (``url``, relative to the node) and what it is."""

    url: str
    name: str
    description: str | None = None
    author: str | None = None
    tags: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire shape of a flow (stored values: None stays None)."""
        return {
            "url": self.url,
            "name": self.name,
            "description": self.description,
            "tags": None if self.tags is None else list(self.tags),
            "author": self.author,
        }

    @classmethod
    def from_json(cls, data: Any, key: str | None = None) -> FlowRecord:
        """Validate a flow description; ``key`` is its key when flows came as a dict."""
        if not isinstance(data, Mapping):
            raise MeshInputError(f"a flow must be an object, got {data!r}.")
        name = data.get("name")
        url = normalize_flow_url(data.get("url", key), name)
        if name is None:
            name = url.strip("/") or url
        if not isinstance(name, str) or not name.strip():
            raise MeshInputError(f"flow {url}: name must be a non-empty string, got {name!r}.")
        return cls(
            url=url,
            name=name,
            description=_optional_text(data.get("description"), f"flow {url}: description"),
            author=_optional_text(data.get("author"), f"flow {url}: author"),
            tags=_tags(data.get("tags"), f"flow {url}: tags"),
        )


def flows_from_json(data: Any) -> list[FlowRecord]:
    """Flows given as a list or as a dict keyed by URL, in order (duplicates kept)."""
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [FlowRecord.from_json(v, str(k)) for k, v in data.items()]
    if isinstance(data, list | tuple):
        return [FlowRecord.from_json(v) for v in data]
    raise MeshInputError(f"flows must be a list or an object keyed by url, got {data!r}.")


def dedupe_flows(flows: Iterable[FlowRecord]) -> dict[str, FlowRecord]:
    """Flows by URL; for a duplicate URL the last one wins (as the original registry does)."""
    out: dict[str, FlowRecord] = {}
    for flow in flows:
        out.pop(flow.url, None)  # the winner takes the position of its last occurrence
        out[flow.url] = flow
    return out


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node and its flows as a registry knows it.

    ``registry`` is the registry the node registered with (its home); it travels with the
    record through the mesh so every registry files it under the right provider.
    """

    url: str
    organization: str | None
    flows: dict[str, FlowRecord] = field(default_factory=dict)
    created: str | None = None
    modified: str | None = None
    heartbeat: str | None = None
    registry: str | None = None

    def freshness(self) -> tuple[float, float]:
        """What decides between two copies of a node: later ``modified``, then ``heartbeat``."""
        return (parse_timestamp(self.modified) or 0.0, parse_timestamp(self.heartbeat) or 0.0)

    def with_(self, **changes: Any) -> NodeRecord:
        """A copy with ``changes``."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The wire shape of a node (plus ``registry``, the node's home registry)."""
        return {
            "url": self.url,
            "organization": self.organization,
            "flows": {url: f.to_json() for url, f in self.flows.items()},
            "created": self.created,
            "modified": self.modified,
            "heartbeat": self.heartbeat,
            "status": "unknown",
            "registry": self.registry,
        }

    @classmethod
    def from_json(cls, data: Any, key: str | None = None) -> NodeRecord:
        """Validate a node description (flows de-duplicated, last wins)."""
        if not isinstance(data, Mapping):
            raise MeshInputError(f"a node must be an object, got {data!r}.")
        url = normalize_service_url(data.get("url", key), "node url")
        registry = data.get("registry")
        return cls(
            url=url,
            organization=_optional_text(data.get("organization"), f"node {url}: organization"),
            flows=dedupe_flows(flows_from_json(data.get("flows"))),
            created=_check_timestamp(data.get("created"), f"node {url}: created"),
            modified=_check_timestamp(data.get("modified"), f"node {url}: modified"),
            heartbeat=_check_timestamp(data.get("heartbeat"), f"node {url}: heartbeat"),
            registry=None if registry is None else normalize_service_url(registry, "registry"),
        )


def nodes_from_json(data: Any) -> list[NodeRecord]:
    """Nodes given as a list or as a dict keyed by URL."""
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [NodeRecord.from_json(v, str(k)) for k, v in data.items()]
    if isinstance(data, list | tuple):
        return [NodeRecord.from_json(v) for v in data]
    raise MeshInputError(f"nodes must be a list or an object keyed by url, got {data!r}.")


@dataclass(slots=True)
class ProviderRecord:
    """A peer registry (or a registry known through one) and the nodes filed under it."""

    url: str
    organization: str | None
    feed: bool
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    created: str | None = None
    modified: str | None = None
    heartbeat: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire shape of a provider."""
        return {
            "url": self.url,
            "organization": self.organization,
            "feed": self.feed,
            "nodes": {url: n.to_json() for url, n in self.nodes.items()},
            "created": self.created,
            "modified": self.modified,
            "heartbeat": self.heartbeat,
        }

    @classmethod
    def from_json(cls, data: Any, key: str | None = None) -> ProviderRecord:
        """Validate a provider record (from a cache file)."""
        if not isinstance(data, Mapping):
            raise MeshInputError(f"a provider must be an object, got {data!r}.")
        url = normalize_service_url(data.get("url", key), "provider url")
        return cls(
            url=url,
            organization=_optional_text(data.get("organization"), f"provider {url}: organization"),
            feed=bool(data.get("feed", True)),
            nodes={n.url: n for n in nodes_from_json(data.get("nodes"))},
            created=_check_timestamp(data.get("created"), f"provider {url}: created"),
            modified=_check_timestamp(data.get("modified"), f"provider {url}: modified"),
            heartbeat=_check_timestamp(data.get("heartbeat"), f"provider {url}: heartbeat"),
        )
