"""Client handles: a user's handle on a node (``cl``), and the transport of its proxies."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

from ..errors import FlowTimeoutError, MessagingError
from ..flows import InstanceAddress
from ..identity import KeyPair
from ..messages import FUTURE_SEP, FlowMessage, ReplyMode

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["HELP_EXPECTED", "Client", "never_arrives"]

#: How long after sending a request its sender is expected to start running it (see
#: Node.helpers): long enough to get from ``get_reply_future`` to ``get_data``.
HELP_EXPECTED = 0.002


#: Per thread: the future id of the last request it sent (see Client._help_until_reply).
_last_sent = threading.local()

#: Messages a waiting thread claims at once from an in-process worker's pool: those known to
#: be quick run one after the other and commit together (Dispatcher.run_batch).
HELP_BATCH = 8


def _as_user(message: FlowMessage, user_id: str) -> FlowMessage:
    """``message`` sent by ``user_id``: the runtime says who sends, never the caller."""
    reply_data = message.reply_data
    if reply_data.get("user_id") not in (None, user_id):
        reply_data = {**reply_data, "user_id": user_id}
    if message.user_id == user_id and reply_data is message.reply_data:
        return message
    return message.replace(user_id=user_id, reply_data=reply_data)


def future_instance(reply: FlowMessage) -> str | None:
    """The instance a future reply must come from (its request's target), or None."""
    if reply.reply_data.get("mode") != ReplyMode.FUTURE:
        return None
    future_id = reply.reply_data.get("future_id")
    if not isinstance(future_id, str) or FUTURE_SEP not in future_id:
        return None
    return future_id.rsplit(FUTURE_SEP, 1)[1]


def never_arrives(future_id: str) -> MessagingError:
    """The error for a wait whose reply cannot come: nothing is left to run, nobody else runs."""
    return MessagingError(
        f"the reply for future {future_id} will never arrive: no queued message can run. The "
        f"flow handled the request without replying, or blocking calls wait on each other in a "
        f"cycle."
    )


class Client:
    """A user's handle on a node (``cl`` in the serving API).

    It is also the transport for proxies held by user code: messages sent through them are
    committed at once (their ``user_id`` set to this user's, whatever the caller put there),
    and futures wait on the node's database.

    A handle needs the user's key: ``Client(node, key_pair)``, or ``Client(node, user_id)``
    where this process can read the user's key file (else
    :class:`~flowplex.errors.PermissionDeniedError`).
    """

    __slots__ = ("_key", "_user_id", "node")

    def __init__(self, node: Node, user: KeyPair | str) -> None:
        from ..errors import PermissionDeniedError

        key = user if isinstance(user, KeyPair) else node.key_for(user)
        if not isinstance(user, KeyPair | str):
            raise PermissionDeniedError(f"a Client needs a user's KeyPair, got {user!r}.")
        self.node = node
        self._key = key
        self._user_id = key.user_id

    @property
    def key(self) -> KeyPair:
        """This user's key pair (it signs what the handle sends to other nodes)."""
        return self._key

    def get_user_id(self) -> str:
        """This user's id: the hex Ed25519 public key."""
        return self._user_id

    @property
    def user_id(self) -> str:
        """Same as :meth:`get_user_id`."""
        return self._user_id

    # -- Transport --------------------------------------------------------------------------

    def send(self, target: InstanceAddress, message: FlowMessage) -> None:
        """Queue ``message`` for ``target`` (committed before this returns), as this user."""
        message = _as_user(message, self._user_id)
        _last_sent.future_id = message.reply_data.get("future_id")
        node = self.node
        if node.has_workers:
            # The sender usually waits on the reply next, running the message itself: the
            # worker threads woken by this message leave it that moment.
            node.help_expected_until = time.monotonic() + HELP_EXPECTED
        node.deliver(requests=[(target, message)])

    def send_reply(self, reply: FlowMessage) -> None:
        """Route a reply (user code rarely sends one; flows do, through their worker).

        Only the user serving the instance a future's request went to may answer it
        (:class:`~flowplex.errors.PermissionDeniedError` otherwise)."""
        from ..errors import PermissionDeniedError

        bound = future_instance(reply)
        if bound is not None:
            record = self.node.backend.get_instance(bound)
            if record is None or record.user_id != self._user_id:
                raise PermissionDeniedError(
                    f"user {self._user_id[:12]}... does not serve instance {bound}: it cannot "
                    "answer a request sent there."
                )
            reply = reply.replace(src_flow_id=bound)
        self.node.deliver(replies=[reply])

    def poll_reply(self, future_id: str) -> FlowMessage | None:
        """The reply for ``future_id`` if it has arrived (taken: a second poll gets None).

        Where waiting threads run the messages (:meth:`Node.run_in_callers`, a LocalRuntime),
        it first runs what can run now, so a future gets done without anyone waiting on it.
        """
        if self.node.caller_dispatchers:
            return self._run_for_reply(future_id, None, None)
        return self._take_reply(future_id)

    def _take_reply(self, future_id: str) -> FlowMessage | None:
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

        While it waits, this thread runs claimable messages of the node's caller dispatchers
        (:meth:`Node.run_in_callers`), checking the timeout between messages; where nothing
        else can run them and nothing is left to run, the reply can never come, and it raises
        :class:`~flowplex.MessagingError` at once instead of hanging. It also runs messages for
        the dispatch workers this process runs on the node (same pools, same secrets): a
        request served in-process is then answered without a thread hand-off. With a timeout
        it runs only messages whose instance has lately run in under half the time left
        (:meth:`Dispatcher.run_batch`), leaving the others to the workers, so it returns when
        its timeout says.
        """
        node = self.node
        if node.caller_dispatchers:
            return self._run_until_reply(future_id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if node.has_workers:
            while True:
                with node.helping():
                    reply = self._help_until_reply(future_id, deadline, timeout)
                if reply is not None:
                    return reply
                self._wait_a_while(future_id, deadline, timeout)
        while True:
            reply = self._poll_open(future_id)
            if reply is not None:
                return reply
            self._wait_a_while(future_id, deadline, timeout)

    def _run_until_reply(self, future_id: str, timeout: float | None) -> FlowMessage:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._run_for_reply(future_id, deadline, timeout)
            if reply is not None:
                return reply
            if self.node.callers_run_everything:
                raise never_arrives(future_id)
            self._wait_a_while(future_id, deadline, timeout)

    def _run_for_reply(
        self, future_id: str, deadline: float | None, timeout: float | None
    ) -> FlowMessage | None:
        """Run claimable messages until the reply is in (returned) or none is left (None)."""
        while True:
            reply = self._poll_open(future_id)
            if reply is not None:
                return reply
            if deadline is not None and time.monotonic() >= deadline:
                raise FlowTimeoutError(f"no reply for future {future_id} within {timeout} s.")
            if not self._help():
                return None

    def _wait_a_while(self, future_id: str, deadline: float | None, timeout: float | None) -> None:
        """Sleep until the reply may have come (at most a second), or time out."""
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
        """:meth:`_take_reply`, raising once the node is closed (no reply can come then)."""
        reply = self._take_reply(future_id)
        if reply is None and self.node.closed:
            raise MessagingError("the node was closed while waiting for a reply.")
        return reply

    def _help_until_reply(
        self, future_id: str, deadline: float | None, timeout: float | None
    ) -> FlowMessage | None:
        """Run claimable in-process workers' messages until the reply is in (returned), or
        none is left that fits before ``deadline`` (None).

        It runs a message before it first looks for the reply: a caller usually waits just
        after sending, when the reply cannot be in yet, and the look costs a round trip. A
        caller that sent other requests since (several in flight) looks first: the reply may
        well be in, and if not, the messages queued meanwhile run as one batch (one commit).
        """
        if getattr(_last_sent, "future_id", None) != future_id:
            reply = self._poll_open(future_id)
            if reply is not None:
                return reply
        while True:
            within = None
            if deadline is not None:
                within = deadline - time.monotonic()
                if within <= 0:
                    raise FlowTimeoutError(f"no reply for future {future_id} within {timeout} s.")
            helped = self._help(within)
            reply = self._poll_open(future_id)
            if reply is not None or not helped:
                return reply

    def _help(self, within: float | None = None) -> bool:
        """Run one claimable message of a caller dispatcher, or a batch of an in-process
        worker's pool (expected to run ``within`` seconds, if given); False if there was
        none."""
        node = self.node
        for dispatcher in node.caller_dispatchers:
            if dispatcher.run_batch(limit=1):
                return True
        for worker in node.workers:
            dispatcher = worker.dispatcher
            if not dispatcher.stopping and dispatcher.run_batch(limit=HELP_BATCH, within=within):
                return True
        return False

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage:
        """As :meth:`wait_reply`, in a thread, so the event loop keeps running.

        Where waiting threads run the messages (a LocalRuntime), the event loop's thread runs
        them itself, as a synchronous wait would: they run one at a time, in one thread.
        """
        if self.node.caller_dispatchers:
            return self.wait_reply(future_id, timeout)
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
