"""Nodes: ``Node`` (serving, mounting, delivering), ``open_node``, ``start_node``,
``start_node_with_users``."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, resolve_class_path
from ..errors import (
    ClassPathError,
    FlowDefinitionError,
    FlowplexError,
    MessagingError,
    UnknownInstanceError,
)
from ..flows import Flow, InstanceAddress
from ..identity import KeyPair, generate_key_pair, load_key_pair, save_key_pair
from ..messages import FlowMessage, ReplyMode
from ._backend import (
    Backend,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    ReplyRecord,
    UserRecord,
)
from ._client import Client, future_instance
from ._mount import MountRequest, mount, remote_link, serve_local_subflows
from ._open import open_backend

if TYPE_CHECKING:
    from ._dispatch import Dispatcher, DispatchWorker

__all__ = ["Node", "build_outgoing", "open_node", "start_node", "start_node_with_users"]

logger = logging.getLogger("flowplex.node")

_NODES: dict[str, Node] = {}
_NODES_LOCK = threading.Lock()


#: How long worker threads leave new messages to a thread that is helping.
HELPER_GRACE = 0.005


class Node:
    """One node: a backend (its database) plus what runs on it in this process.

    Get one through :func:`start_node` / :func:`start_node_with_users`, which reopen an
    existing node; several processes may open the same SQLite file or PostgreSQL database.

    Users serve flow classes at endpoints (:meth:`serve`) and anyone on the node mounts
    instances of them (:meth:`mount`); dispatchers run the instances' messages, in worker
    threads or processes, or in the threads that wait on replies (:meth:`run_in_callers`).
    """

    def __init__(self, backend: Backend, path: Path | None, key: str) -> None:
        self.backend = backend
        self.path = path
        self._key = key
        self._workers: list[DispatchWorker] = []
        # Dispatchers without a thread: whoever waits on a reply runs their messages.
        self._caller_dispatchers: list[Dispatcher] = []
        self._classes: dict[str, type[Flow]] = {}
        self._keys: dict[str, KeyPair] = {}
        self._lock = threading.Lock()
        self.closed = False
        # A memory database lives in this process only: no other process runs its messages.
        self.private = backend.volatile
        # Threads that wait on a reply and run messages meanwhile (Client.wait_reply), while
        # they are awake. Worker threads give them the first go at a new message: two threads
        # racing for it cost more (GIL and lock hand-offs) than one running it.
        self.helpers = 0
        self._helpers_lock = threading.Lock()
        # Until when a thread that just sent a request is expected to start helping.
        self.help_expected_until = 0.0
        #: Where this node's HTTP API answers, when this process serves it (``flowplex up``):
        #: flows on other nodes send their replies there.
        self.advertised_url: str | None = None

    @property
    def url(self) -> str:
        """The database URL, its password (if any) hidden: fit for messages, logs and stored
        run data (``backend.url`` is the URL as given)."""
        from ..db import redact

        return redact(self.backend.url)

    @property
    def keys_dir(self) -> Path | None:
        """Where new users' key files go: ``keys`` in the node's folder, else in
        ``FLOWPLEX_HOME`` (None for a node in memory without a folder: its keys live in this
        process only)."""
        from ..db import DatabaseURL

        if self.path is not None:
            return Path(self.path) / "keys"
        if DatabaseURL.parse(self.backend.url).volatile:
            return None
        return Settings.from_env().home / "keys"

    def _key_paths(self, user_id: str) -> list[Path]:
        from ..db import DatabaseURL, keys_dir

        folders = [] if self.keys_dir is None else [self.keys_dir]
        db = DatabaseURL.parse(self.backend.url)
        if not db.volatile:
            # The home's, and where the migration of an older database put them.
            folders += [Settings.from_env().home / "keys", keys_dir(db)]
        return [folder / f"{user_id}.pem" for folder in dict.fromkeys(folders)]

    def key_for(self, user_id: str) -> KeyPair:
        """The key pair of ``user_id``, from its key file (only its owner can read it).

        Raises :class:`~flowplex.errors.PermissionDeniedError` when this process holds no key
        for that user: a handle for a user needs the user's key.
        """
        from ..errors import KeyFileError, PermissionDeniedError

        with self._lock:
            key = self._keys.get(user_id)
        if key is not None:
            return key
        for path in self._key_paths(user_id):
            try:
                key = load_key_pair(path)
            except KeyFileError as exc:
                if path.exists():
                    raise PermissionDeniedError(f"cannot use the key of {user_id}: {exc}") from None
                continue
            if key.user_id == user_id:
                with self._lock:
                    self._keys[user_id] = key
                return key
        raise PermissionDeniedError(
            f"no key for user {user_id} here: a handle for a user needs that user's key "
            "(its key file, or Client(node, key_pair))."
        )

    def users(self) -> list[Client]:
        """A client handle for every user of the node whose key this process holds, oldest
        first."""
        from ..errors import PermissionDeniedError

        clients = []
        for record in self.backend.list_users():
            try:
                clients.append(Client(self, self.key_for(record.user_id)))
            except PermissionDeniedError:
                continue
        return clients

    def add_user(self) -> Client:
        """Create a user (a new Ed25519 key pair, saved to its key file) and return its
        handle."""
        pair = generate_key_pair()
        where = self.keys_dir
        if where is not None:
            save_key_pair(where / f"{pair.user_id}.pem", pair)
        with self._lock:
            self._keys[pair.user_id] = pair
        self.backend.add_user(UserRecord(pair.user_id, time.time()))
        logger.info("created user %s", pair.user_id)
        return Client(self, pair)

    def _add_user_below(self, count: int) -> bool:
        """:meth:`add_user`, only if the node has fewer than ``count`` users (atomically
        across processes); whether it did."""
        pair = generate_key_pair()
        where = self.keys_dir
        key_file = None if where is None else where / f"{pair.user_id}.pem"
        if key_file is not None:
            # Saved first, so that a user is never stored without its key.
            save_key_pair(key_file, pair)
        if not self.backend.add_user_below(UserRecord(pair.user_id, time.time()), count):
            if key_file is not None:
                key_file.unlink(missing_ok=True)
            return False
        with self._lock:
            self._keys[pair.user_id] = pair
        logger.info("created user %s", pair.user_id)
        return True

    def has_user(self, user_id: str) -> bool:
        """True if ``user_id`` is a user of this node."""
        return any(u.user_id == user_id for u in self.backend.list_users())

    def flow_class(self, flow_class_name: str) -> type[Flow]:
        """The Flow subclass a dotted path names (or :meth:`register_flow_class` registered).

        Raises :class:`~flowplex.ClassPathError` or :class:`~flowplex.FlowDefinitionError`.
        """
        cls = self._classes.get(flow_class_name)
        if cls is None:
            obj = resolve_class_path(flow_class_name)
            if not (isinstance(obj, type) and issubclass(obj, Flow)):
                raise FlowDefinitionError(f"{flow_class_name!r} is not a Flow class (got {obj!r}).")
            cls = self._classes[flow_class_name] = obj
        return cls

    def register_flow_class(self, cls: type[Flow]) -> str:
        """The name to serve ``cls`` under: its dotted path when that imports back to ``cls``.

        A class no path reaches (defined inside a function, or shadowed since) is registered
        with this node by object, under its dotted name (plus ``#2``, ``#3``... if another class
        has that name already); only this process can then run it.
        """
        if not (isinstance(cls, type) and issubclass(cls, Flow)):
            raise FlowDefinitionError(f"{cls!r} is not a Flow class.")
        name = f"{cls.__module__}.{cls.__qualname__}"
        try:
            if self.flow_class(name) is cls:
                return name
        except (ClassPathError, FlowDefinitionError):
            pass
        with self._lock:
            for known, registered in self._classes.items():
                if registered is cls:
                    return known
            unique, n = name, 1
            while unique in self._classes:
                n += 1
                unique = f"{name}#{n}"
            self._classes[unique] = cls
        return unique

    # -- serving ----------------------------------------------------------------------------

    def serve(
        self,
        user_id: str,
        flow_class_name: str,
        endpoint: str,
        *,
        dispatch_point: str = "default",
        parallel_dispatch: bool = False,
        singleton: bool = False,
        with_subflows: bool = False,
    ) -> bool:
        """Serve ``flow_class_name`` at ``user_id``'s ``endpoint``; False if already served.

        The class is imported now, so a bad path fails here rather than at the first mount.
        ``with_subflows`` first serves, depth first, every subflow the same user serves (entries
        with ``user_id`` absent or ``"local"``) at its ``flow_endpoint`` with its own
        ``flow_class_name``, ``singleton``, ``parallel_dispatch`` and ``dispatch_point``; it
        returns False (logging why, serving nothing more) if one lacks ``flow_endpoint`` or
        ``flow_class_name``.
        """
        self.flow_class(flow_class_name)
        if with_subflows and not serve_local_subflows(
            self, user_id, flow_class_name, dispatch_point
        ):
            return False
        record = EndpointRecord(
            user_id=user_id,
            endpoint=endpoint,
            flow_class_name=flow_class_name,
            singleton=bool(singleton),
            parallel_dispatch=bool(parallel_dispatch),
            dispatch_point=dispatch_point,
            served=True,
            created_at=time.time(),
        )
        if not self.backend.serve_endpoint(record):
            logger.info("already serving at %s", endpoint)
            return False
        logger.info(
            "started serving %s at %s (dispatch_point=%s, parallel_dispatch=%s, singleton=%s)",
            flow_class_name,
            endpoint,
            dispatch_point,
            parallel_dispatch,
            singleton,
        )
        return True

    def is_served(self, user_id: str, endpoint: str) -> bool:
        """True if ``user_id`` serves ``endpoint`` (and has not unserved it)."""
        record = self.backend.get_endpoint(user_id, endpoint)
        return record is not None and record.served

    def unserve(self, user_id: str, endpoint: str) -> bool:
        """Stop serving ``endpoint``: instances keep working, new mounts fail. False if unknown."""
        done = self.backend.set_served(user_id, endpoint, False)
        if done:
            logger.info("stopped serving at %s", endpoint)
        return done

    def endpoints(self, user_id: str) -> list[EndpointRecord]:
        """``user_id``'s endpoints, served or not, in creation order."""
        return self.backend.list_endpoints(user_id)

    def instances(self, user_id: str, endpoint: str | None = None) -> list[InstanceRecord]:
        """The instances ``user_id`` serves (on ``endpoint`` if given), in mount order."""
        return self.backend.list_instances(user_id, endpoint)

    def delete_endpoint(self, user_id: str, endpoint: str) -> list[str]:
        """Delete an endpoint and every instance mounted on it; the deleted instance ids."""
        ids = self.backend.delete_endpoint(user_id, endpoint)
        for flow_id in ids:
            logger.info("deleted flow instance %s", flow_id)
            self._forget(flow_id)
            self._answer_queued(flow_id)
        logger.info("deleted endpoint %s", endpoint)
        return ids

    def delete_instance(self, user_id: str, flow_id: str) -> bool:
        """Delete an instance ``user_id`` serves; False if it serves none with that id."""
        record = self._own_instance(user_id, flow_id)
        if record is None or not self.backend.delete_instance(record.flow_id):
            return False
        logger.info("deleted flow instance %s", flow_id)
        self._forget(record.flow_id)
        self._answer_queued(record.flow_id)
        return True

    def _forget(self, flow_id: str) -> None:
        """Let this process's dispatchers drop what they keep for the deleted ``flow_id``."""
        with self._lock:
            dispatchers = [w.dispatcher for w in self._workers] + self._caller_dispatchers
        for dispatcher in dispatchers:
            dispatcher.forget(flow_id)

    def _answer_queued(self, flow_id: str) -> None:
        """Answer at once, with an error, the messages queued for the deleted ``flow_id`` that
        no worker holds (rather than leave their callers waiting for some worker to claim
        them). One held by a worker is answered by that worker."""
        from ..flows import error_reply

        answers = []
        for body in self.backend.take_queued(flow_id):
            try:
                message = FlowMessage.from_json(body)
            except MessagingError:
                continue  # nobody to answer
            exc = UnknownInstanceError(
                f"Unknown flow instance {flow_id}: it was deleted before it ran this message."
            )
            answers.append(error_reply(message, exc, "unknown", flow_id))
        if answers:
            self.deliver(replies=answers)

    def instance_metadata(self, user_id: str, flow_id: str) -> dict[str, str] | None:
        """``{"flow_endpoint", "user_id"}`` of an instance ``user_id`` serves, else None.

        ``user_id`` in the answer is the client that mounted it (``"local"``: the server).
        """
        record = self._own_instance(user_id, flow_id)
        if record is None:
            return None
        return {"flow_endpoint": record.endpoint, "user_id": record.client_id}

    def instance_state(self, user_id: str, flow_id: str) -> dict[str, Any]:
        """The persisted ``flow_state`` of an instance ``user_id`` serves.

        Raises :class:`~flowplex.UnknownInstanceError` for an unknown id or another user's
        instance: users cannot read each other's state.
        """
        record = self._own_instance(user_id, flow_id)
        if record is None:
            raise UnknownInstanceError(f"user {user_id} serves no flow instance {flow_id}.")
        return record.state

    def _own_instance(self, user_id: str, flow_id: str) -> InstanceRecord | None:
        record = self.backend.get_instance(str(flow_id))
        return record if record is not None and record.user_id == user_id else None

    def mount(
        self,
        requester: str,
        serving_user: str,
        endpoint: str,
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
        dispatch_point_override: str | None = None,
        *,
        compose_locally: bool = False,
    ) -> str:
        """Mount an instance of what ``serving_user`` serves at ``endpoint``; its id.

        ``requester`` is the user asking. A new instance per call, unless the endpoint is a
        singleton: then everybody gets its one instance (and ``config_overrides`` are ignored).
        ``config_overrides`` are deep-merged over the class's default config; ``initial_state``
        over the state ``set_up_flow_state`` builds; ``dispatch_point_override`` moves the
        instance to another worker pool. Subflows of a composite are mounted first, and
        everything is committed in one transaction, or nothing.

        ``compose_locally`` is how a :class:`~flowplex.LocalRuntime` composes: every subflow is
        ``serving_user``'s, whatever its ``user_id`` says, at its ``flow_endpoint`` (or, lacking
        one, its key), and an endpoint nobody serves yet is served on first use from the
        subflow's ``flow_class_name`` (so the first entry naming an endpoint defines it).

        Raises :class:`~flowplex.FlowInstanceError` with the reason for any failure of the
        flow or its subflows ("Not serving at {endpoint}.", "Failed to get instance of
        subflow {key}.", a constructor or ``set_up_flow_state`` that raised, ...).
        """
        if config_overrides is not None and not isinstance(config_overrides, Mapping):
            raise FlowplexError("config_overrides must be a mapping.")
        if initial_state is not None and not isinstance(initial_state, Mapping):
            raise FlowplexError("initial_state must be a mapping.")
        request = MountRequest(
            requester=requester,
            serving_user=serving_user,
            endpoint=endpoint,
            config_overrides=config_overrides,
            initial_state=initial_state,
            dispatch_point_override=dispatch_point_override,
            compose_locally=compose_locally,
        )
        return mount(self, request)

    def mount_remote(
        self,
        requester: str,
        endpoint: str,
        *,
        node_url: str | None = None,
        registry: str | None = None,
        remote_user: str | None = None,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> str:
        """Mount ``endpoint`` served on another node (``node_url``, or the one ``registry``
        lists for it) for ``requester``, a user of this node; the id of the local link instance
        standing for it: messages sent to the link reach the remote instance, and its replies
        come back (see :mod:`flowplex.runtime._remote`). The reply of a message needs this
        node served over HTTP (``flowplex up``) to come back to.

        Raises :class:`~flowplex.FlowInstanceError` with the reason when the other node
        refuses or cannot be reached.
        """
        record = remote_link(
            self,
            requester,
            endpoint,
            node_url=node_url,
            registry=registry,
            remote_user=remote_user,
            overrides=config_overrides,
        )
        self.backend.add_instances([record])
        return record.flow_id

    # -- running ----------------------------------------------------------------------------

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

    def run_in_callers(self, dispatcher: Dispatcher) -> None:
        """Let every thread that waits on a reply run ``dispatcher``'s messages meanwhile.

        The dispatcher gets no thread of its own: its messages run only while someone waits
        (or calls :meth:`Dispatcher.run_batch`). On a private (memory) node with no worker
        threads, a wait that finds nothing to run raises at once: the reply cannot come.
        """
        with self._lock:
            self._caller_dispatchers.append(dispatcher)

    @property
    def caller_dispatchers(self) -> list[Dispatcher]:
        """The dispatchers run by waiting threads (see :meth:`run_in_callers`)."""
        return self._caller_dispatchers

    @property
    def callers_run_everything(self) -> bool:
        """True when only the threads waiting on replies run this node's messages: nothing
        else can answer a request (a private node, no worker threads, caller dispatchers)."""
        return self.private and bool(self._caller_dispatchers) and not self._workers

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
        """Send an error reply for each message addressed to an instance that does not exist
        (for a reply pushed to a deleted composite: to the caller its conversation began with)."""
        from ..errors import UnknownInstanceError
        from ..flows import error_reply

        missing = set(unknown)
        answers = []
        for flow_id, message in sent:
            if flow_id not in missing:
                continue
            if message.is_reply and not message.reply_data.get("origin"):
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
            bound = future_instance(reply)
            if bound is not None and reply.src_flow_id != bound:
                logger.warning(
                    "dropped a reply for future %s from %s: only %s may answer it",
                    future_id,
                    reply.src_flow_id,
                    bound,
                )
                continue
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


def _node_key(url: str) -> str | None:
    """A key identifying the database, or None if it cannot be shared (volatile)."""
    from ..db import DatabaseURL

    return DatabaseURL.parse(url).key


def open_node(db: str | None = None, path: str | Path | None = None) -> Node:
    """Open (or reopen) the node whose database is ``db``, files in ``path``.

    The defaults are the settings' (:meth:`flowplex.Settings.from_env`), so with neither
    argument this is the node the ``flowplex`` command works on: files in ``FLOWPLEX_HOME``
    (``./.flowplex``), database ``FLOWPLEX_DB`` or a SQLite file there. With only ``path``,
    the database is ``FLOWPLEX_DB`` or a SQLite file in ``path``. Within one process the same
    database gives the same Node.
    """
    node_path = Path(path) if path is not None else None
    if db is None:
        settings = Settings.from_env()
        db = settings.db_url
        if node_path is None:
            node_path = settings.home
        elif db == _sqlite_in(settings.home):  # no FLOWPLEX_DB: the file goes in ``path``
            db = _sqlite_in(node_path)
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
    key = _node_key(db)
    with _NODES_LOCK:
        if key is not None and key in _NODES and not _NODES[key].closed:
            return _NODES[key]
        node = Node(open_backend(db), node_path, key or f"memory:{id(object())}")
        if key is not None:
            _NODES[key] = node
        return node


def _sqlite_in(home: Path) -> str:
    """The default database of a node whose files are in ``home`` (as the settings say)."""
    return Settings.from_env({"FLOWPLEX_HOME": str(home)}).db_url


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
        # Several processes may start on a fresh database at once: between them they create
        # the users missing, not that many each (users whose keys are elsewhere, not in this
        # process's reach, do not count).
        stored = len(node.backend.list_users())
        node._add_user_below(stored + num_users - len(clients))
        clients = node.users()
    return clients[:num_users]


def start_node(path: str | Path | None = None, db: str | None = None) -> Client:
    """Start (or reopen) a node and return the handle of its first user.

    ``path`` holds the node's files (default: ``FLOWPLEX_HOME``, else ``./.flowplex``, the
    node the ``flowplex`` command uses); ``db`` picks the backend: ``"memory://"``,
    ``"sqlite:///file.db"`` (the default: ``FLOWPLEX_DB`` when set, else a file in ``path``) or
    ``"postgresql://..."``. Reopening an existing node gives back its users, endpoints,
    instances, state and queued messages.
    """
    return start_node_with_users(1, path, db)[0]
