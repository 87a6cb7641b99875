"""Nodes and client handles: ``start_node``, ``start_node_with_users``, ``Node``, ``Client``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import resolve_class_path
from ..errors import FlowDefinitionError, FlowTimeoutError, MessagingError
from ..flows import Flow
from ..flows._transport import InstanceAddress
from ..identity import generate_key_pair
from ..messages import FlowMessage, ReplyMode
from ._backend import Backend, Envelope, ReplyRecord, UserRecord
from ._open import open_backend

if TYPE_CHECKING:
    from ._dispatch import DispatchWorker

__all__ = ["Client", "Node", "open_node", "start_node", "start_node_with_users"]

logger = logging.getLogger("flowplex.node")

_NODES: dict[str, Node] = {}
_NODES_LOCK = threading.Lock()


#: How long after sending a request its sender is expected to start running it (see
#: Node.helpers): long enough to get from ``get_reply_future`` to ``get_data``.
HELP_EXPECTED = 0.002
#: How long worker threads leave new messages to a thread that is helping.
HELPER_GRACE = 0.005


class Node:
    """One node: a backend (its database) plus what runs on it in this process.

    Get one through :func:`start_node` / :func:`start_node_with_users`, which reopen an
    existing node; several processes may open the same SQLite file or PostgreSQL database.
    """

    def __init__(self, backend: Backend, path: Path | None, key: str) -> None:
        self.backend = backend
        self.path = path
        self._key = key
        self._workers: list[DispatchWorker] = []
        self._classes: dict[str, type[Flow]] = {}
        self._lock = threading.Lock()
        self.closed = False
        # Threads that wait on a reply and run messages meanwhile (Client.wait_reply), while
        # they are awake. Worker threads give them the first go at a new message: two threads
        # racing for it cost more (GIL and lock hand-offs) than one running it.
        self.helpers = 0
        self._helpers_lock = threading.Lock()
        # Until when a thread that just sent a request is expected to start helping.
        self.help_expected_until = 0.0

    @property
    def url(self) -> str:
        """The database URL."""
        return self.backend.url

    def users(self) -> list[Client]:
        """A client handle for every user of the node, oldest first."""
        return [Client(self, u.user_id) for u in self.backend.list_users()]

    def add_user(self) -> Client:
        """Create a user (a new Ed25519 key pair) and return its handle."""
        pair = generate_key_pair()
        self.backend.add_user(UserRecord(pair.user_id, pair.private_key, time.time()))
        logger.info("created user %s", pair.user_id)
        return Client(self, pair.user_id)

    def has_user(self, user_id: str) -> bool:
        """True if ``user_id`` is a user of this node."""
        return any(u.user_id == user_id for u in self.backend.list_users())

    def flow_class(self, flow_class_name: str) -> type[Flow]:
        """The Flow subclass a dotted path names (cached per node)."""
        cls = self._classes.get(flow_class_name)
        if cls is None:
            obj = resolve_class_path(flow_class_name)
            if not (isinstance(obj, type) and issubclass(obj, Flow)):
                raise FlowDefinitionError(f"{flow_class_name!r} is not a Flow class (got {obj!r}).")
            cls = self._classes[flow_class_name] = obj
        return cls

    def register_worker(self, worker: DispatchWorker) -> None:
        """Track a worker thread so :meth:`close` stops it."""
        with self._lock:
            self._workers.append(worker)

    def unregister_worker(self, worker: DispatchWorker) -> None:
        """Forget a stopped worker."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def help_deferral(self) -> float:
        """How long a worker thread should leave new messages to helpers (0: not at all)."""
        if self.helpers:
            return HELPER_GRACE
        return max(0.0, self.help_expected_until - time.monotonic())

    @contextlib.contextmanager
    def helping(self) -> Iterator[None]:
        """Count the calling thread among the helpers while the block runs."""
        with self._helpers_lock:
            self.helpers += 1
        try:
            yield
        finally:
            with self._helpers_lock:
                self.helpers -= 1

    @property
    def has_workers(self) -> bool:
        """Whether worker threads run on this node in this process (no lock: a hint)."""
        return bool(self._workers)

    @property
    def workers(self) -> list[DispatchWorker]:
        """The worker threads running on this node in this process."""
        with self._lock:
            return list(self._workers)

    def close(self, timeout: float = 10.0) -> None:
        """Stop this process's workers (each finishes its current message), then the backend."""
        if self.closed:
            return
        for worker in self.workers:
            worker.stop(wait=False)
        for worker in self.workers:
            worker.join(timeout)
        self.closed = True
        self.backend.close()
        with _NODES_LOCK:
            if _NODES.get(self._key) is self:
                del _NODES[self._key]

    # -- sending ----------------------------------------------------------------------------

    def deliver(
        self,
        requests: Sequence[tuple[InstanceAddress, FlowMessage]] = (),
        replies: Sequence[FlowMessage] = (),
    ) -> None:
        """Queue requests and route replies in one transaction, answering the undeliverable."""
        envelopes, records, sent = build_outgoing(requests, replies)
        unknown = self.backend.enqueue(envelopes, records)
        if unknown:
            self.answer_undeliverable(unknown, sent)

    def answer_undeliverable(
        self, unknown: list[str], sent: Sequence[tuple[str, FlowMessage]]
    ) -> None:
        """Send an error reply for each message addressed to an instance that does not exist."""
        from ..errors import UnknownInstanceError
        from ..flows import error_reply

        missing = set(unknown)
        answers = []
        for flow_id, message in sent:
            if flow_id not in missing:
                continue
            if message.is_reply:
                logger.warning(
                    "dropped a reply to deleted flow instance %s (from %s)",
                    flow_id,
                    message.src_flow,
                )
                continue
            exc = UnknownInstanceError(f"Unknown flow instance {flow_id}.")
            answers.append(error_reply(message, exc, "unknown", flow_id))
        if answers:
            envelopes, records, _ = build_outgoing((), answers)
            still_unknown = self.backend.enqueue(envelopes, records)
            for flow_id in still_unknown:
                logger.warning("dropped an error reply to deleted flow instance %s", flow_id)


def build_outgoing(
    requests: Sequence[tuple[InstanceAddress, FlowMessage]],
    replies: Sequence[FlowMessage],
) -> tuple[list[Envelope], list[ReplyRecord], list[tuple[str, FlowMessage]]]:
    """Turn requests and replies into what the backend stores.

    A reply goes where its ``reply_data`` says: a future's reply is stored for the future, a
    push reply is queued for the instance it names, and a ``no_reply`` reply is dropped (an
    error one is logged, so no failure goes unseen).
    """
    envelopes = [Envelope(addr.flow_id, msg.to_json()) for addr, msg in requests]
    sent = [(addr.flow_id, msg) for addr, msg in requests]
    records = []
    for reply in replies:
        mode = reply.reply_data["mode"]
        if mode == ReplyMode.FUTURE:
            future_id = reply.reply_data.get("future_id")
            if not isinstance(future_id, str):
                raise MessagingError("a future reply needs reply_data['future_id'].")
            records.append(ReplyRecord(future_id, reply.to_json()))
        elif mode == ReplyMode.PUSH:
            flow_id = reply.reply_data.get("flow_id")
            if not isinstance(flow_id, str):
                raise MessagingError("a push reply needs reply_data['flow_id'].")
            envelopes.append(Envelope(flow_id, reply.to_json()))
            sent.append((flow_id, reply))
        elif reply.error is not None:
            logger.error(
                "flow instance %s failed on a message nobody waits for: %s",
                reply.src_flow_id,
                reply.error.get("traceback") or reply.data.get("error"),
            )
    return envelopes, records, sent


class Client:
    """A user's handle on a node (``cl`` in the serving API).

    It is also the transport for proxies held by user code: messages sent through them are
    committed at once, and futures wait on the node's database.
    """

    __slots__ = ("_user_id", "node")

    def __init__(self, node: Node, user_id: str) -> None:
        self.node = node
        self._user_id = user_id

    def get_user_id(self) -> str:
        """This user's id: the hex Ed25519 public key."""
        return self._user_id

    @property
    def user_id(self) -> str:
        """Same as :meth:`get_user_id`."""
        return self._user_id

    # -- Transport --------------------------------------------------------------------------

    def send(self, target: InstanceAddress, message: FlowMessage) -> None:
        """Queue ``message`` for ``target`` (committed before this returns)."""
        node = self.node
        if node.has_workers:
            # The sender usually waits on the reply next, running the message itself: the
            # worker threads woken by this message leave it that moment.
            node.help_expected_until = time.monotonic() + HELP_EXPECTED
        node.deliver(requests=[(target, message)])

    def send_reply(self, reply: FlowMessage) -> None:
        """Route a reply (user code rarely sends one; flows do, through their worker)."""
        self.node.deliver(replies=[reply])

    def poll_reply(self, future_id: str) -> FlowMessage | None:
        """The reply for ``future_id`` if it has arrived (taken: a second poll gets None)."""
        body = self.node.backend.take_reply(future_id)
        return None if body is None else FlowMessage.from_json(body)

    def peek_reply(self, future_id: str) -> FlowMessage | None:
        """The reply for ``future_id`` if it has arrived, left in place until
        :meth:`discard_reply`: for callers that must save what they did with it first."""
        body = self.node.backend.peek_reply(future_id)
        return None if body is None else FlowMessage.from_json(body)

    def discard_reply(self, future_id: str) -> None:
        """Drop the reply for ``future_id`` (once its reader has saved its effect)."""
        self.node.backend.take_reply(future_id)

    def wait_reply(self, future_id: str, timeout: float | None) -> FlowMessage:
        """Wait for the reply for ``future_id``; :class:`FlowTimeoutError` after ``timeout`` s.

        While it waits, this thread runs claimable messages for the dispatch workers this
        process runs on the node (same pools, same secrets): a request served in-process is
        then answered without a thread hand-off.
        """
        if timeout is None and self.node.has_workers:
            while True:
                with self.node.helping():
                    reply = self._help_until_reply(future_id)
                if reply is not None:
                    return reply
                self.node.backend.wait_for_reply(future_id, 1.0)
        # Helping runs a message of unknown length, so a bounded wait does not help: it must
        # return when its timeout says.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._poll_open(future_id)
            if reply is not None:
                return reply
            wait = 1.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise FlowTimeoutError(
                        f"no reply for future {future_id} within {timeout} s: is a dispatch "
                        f"worker running for the flow's dispatch point?"
                    )
            self.node.backend.wait_for_reply(future_id, min(wait, 1.0))

    def _poll_open(self, future_id: str) -> FlowMessage | None:
        """:meth:`poll_reply`, raising once the node is closed (no reply can come then)."""
        reply = self.poll_reply(future_id)
        if reply is None and self.node.closed:
            raise MessagingError("the node was closed while waiting for a reply.")
        return reply

    def _help_until_reply(self, future_id: str) -> FlowMessage | None:
        """Run claimable messages until the reply is in (returned), or none is left (None).

        It runs a message before it first looks for the reply: a caller usually waits just
        after sending, when the reply cannot be in yet, and the look costs a round trip.
        """
        while True:
            helped = self._help()
            reply = self._poll_open(future_id)
            if reply is not None or not helped:
                return reply

    def _help(self) -> bool:
        """Run one claimable message of an in-process worker's pool; False if there was none."""
        for worker in self.node.workers:
            dispatcher = worker.dispatcher
            if not dispatcher.stopping and dispatcher.run_batch(limit=1):
                return True
        return False

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage:
        """As :meth:`wait_reply`, in a thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.wait_reply, future_id, timeout)

    def __repr__(self) -> str:
        return f"<Client user={self._user_id[:16]}… node={self.node.url}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Client)
            and other.node is self.node
            and other.get_user_id() == self._user_id
        )

    def __hash__(self) -> int:
        return hash((id(self.node), self._user_id))


def _node_key(url: str) -> str | None:
    """A key identifying the database, or None if it cannot be shared (volatile)."""
    from ..db import DatabaseURL

    return DatabaseURL.parse(url).key


def open_node(db: str | None = None, path: str | Path | None = None) -> Node:
    """Open (or reopen) the node whose database is ``db``, files in ``path``.

    ``db`` defaults to ``FLOWPLEX_DB``, else a SQLite file in ``path``; ``path`` defaults to a
    fresh temporary directory. Within one process the same database gives the same Node.
    """
    node_path = Path(path) if path is not None else None
    if db is None:
        db = os.environ.get("FLOWPLEX_DB") or None
    if db is None:
        if node_path is None:
            node_path = Path(tempfile.mkdtemp(prefix="flowplex-node-"))
        db = f"sqlite:///{node_path / 'flowplex.db'}"
    if node_path is not None:
        node_path.mkdir(parents=True, exist_ok=True)
    key = _node_key(db)
    with _NODES_LOCK:
        if key is not None and key in _NODES and not _NODES[key].closed:
            return _NODES[key]
        node = Node(open_backend(db), node_path, key or f"memory:{id(object())}")
        if key is not None:
            _NODES[key] = node
        return node


def start_node_with_users(
    num_users: int = 2, path: str | Path | None = None, db: str | None = None
) -> list[Client]:
    """Start (or reopen) a node with at least ``num_users`` users; return the first ``num_users``.

    Existing users come first, in creation order, so reopening gives the same handles.
    """
    if isinstance(num_users, bool) or not isinstance(num_users, int) or num_users < 1:
        raise ValueError(f"num_users must be a positive integer, got {num_users!r}.")
    node = open_node(db, path)
    clients = node.users()
    while len(clients) < num_users:
        clients.append(node.add_user())
    return clients[:num_users]


def start_node(path: str | Path | None = None, db: str | None = None) -> Client:
    """Start (or reopen) a node and return the handle of its first user.

    ``path`` holds the node's files (a fresh temporary directory when None); ``db`` picks the
    backend: ``"memory://"``, ``"sqlite:///file.db"`` (the default: a file in ``path``, or
    ``FLOWPLEX_DB`` when set) or ``"postgresql://..."``. Reopening an existing node gives back
    its users, endpoints, instances, state and queued messages.
    """
    return start_node_with_users(1, path, db)[0]
