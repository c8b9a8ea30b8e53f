"""A WebSocket client for the end-to-end tests, on wsproto (hypercorn's own WebSocket library)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, RejectConnection, Request, TextMessage


@dataclass
class Session:
    accepted: bool = False
    replies: list[str] = field(default_factory=list)
    rejected_status: int | None = None  # the HTTP status of a refused handshake


def converse(
    port: int, target: str, messages: list[str], replies_each: int, timeout: float = 10.0
) -> Session:
    """Open `target`, send each message and wait for its `replies_each` replies, then close
    the socket as a browser does when its page goes away (close code 1001)."""
    connection = WSConnection(ConnectionType.CLIENT)
    session = Session()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(connection.send(Request(host=f"127.0.0.1:{port}", target=target)))

        def read_until(enough: Callable[[], bool]) -> None:
            while not enough():
                data = sock.recv(65536)
                if not data:
                    raise AssertionError(f"the server closed the connection: {session}")
                connection.receive_data(data)
                for event in connection.events():
                    _take(session, event)

        read_until(lambda: session.accepted or session.rejected_status is not None)
        if not session.accepted:
            return session
        for number, message in enumerate(messages, 1):
            sock.sendall(connection.send(TextMessage(data=message)))
            read_until(lambda: len(session.replies) >= number * replies_each)  # noqa: B023  # called at once
        sock.sendall(connection.send(CloseConnection(code=1001)))
    return session


def _take(session: Session, event: Event) -> None:
    if isinstance(event, AcceptConnection):
        session.accepted = True
    elif isinstance(event, RejectConnection):
        session.rejected_status = event.status_code
    elif isinstance(event, TextMessage):
        session.replies.append(event.data)
    elif isinstance(event, CloseConnection):
        raise AssertionError(f"the server closed the socket: {event.code} {event.reason}")
