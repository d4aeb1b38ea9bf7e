"""A deadline for request headers, which uvicorn does not have (its keep-alive timer restarts at every
byte received, so a client that trickles half a request head holds its connection, and delays a
shutdown, without end).

Built by composition over the public asyncio.Protocol interface, not by subclassing uvicorn: the
protocol uvicorn would run (its ``h11`` choice) does all the HTTP work, and this wrapper reads a copy
of the incoming bytes with h11 itself only to see where each request head ends. The deadline arms
at a request's first byte (and when a connection opens), is cleared once its head is complete (the
body has its own limit in the app), and arms again for the next request of a kept-alive connection.
Idle kept-alive connections stay uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

log = logging.getLogger("qa.serve")


def header_deadline_protocol(read_timeout_s: float) -> type[asyncio.Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)``: uvicorn's HTTP/1.1 protocol, closed when a
    request head is not complete within ``read_timeout_s``."""
    inner_class = import_from_string(HTTP_PROTOCOLS["h11"])

    class HeaderDeadline(asyncio.Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # The arguments are uvicorn's, for its own protocol: passed through untouched.
            self.inner = inner_class(*args, **kwargs)
            self.shadow: h11.Connection | None = h11.Connection(h11.SERVER)
            self.timer: asyncio.TimerHandle | None = None
            self.transport: Any = None
            self.in_head = True  # a new connection is waiting for its first request head

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.inner.connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            self.inner.data_received(data)
            self._follow(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self.inner.connection_lost(exc)

        def eof_received(self) -> bool | None:
            return self.inner.eof_received()

        def pause_writing(self) -> None:
            self.inner.pause_writing()

        def resume_writing(self) -> None:
            self.inner.resume_writing()

        def _follow(self, data: bytes) -> None:
            """Track request heads in the copy of the stream; any surprise hands the connection back
            to uvicorn alone (it answers malformed requests itself)."""
            if self.shadow is None:
                return
            try:
                self.shadow.receive_data(data)
                if self.in_head:
                    self._arm()  # bytes of a request head: of a new connection's or of the next request
                while self.shadow is not None:
                    event = self.shadow.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.Request):
                        self.in_head = False
                        self._disarm()
                    elif isinstance(event, h11.EndOfMessage):
                        self._next_request()
            except h11.ProtocolError:
                self._give_up()  # malformed: uvicorn answers it with its own 400

        def _next_request(self) -> None:
            """A request was read whole: end the shadow's cycle (its response is uvicorn's business)
            so that the next request head is watched too; a connection to be closed is not."""
            shadow = self.shadow
            if shadow is None:  # given up on already
                return
            shadow.send(h11.Response(status_code=204, headers=[]))
            shadow.send(h11.EndOfMessage())
            if shadow.our_state is h11.DONE and shadow.their_state is h11.DONE:
                shadow.start_next_cycle()
                self.in_head = True
                if shadow.trailing_data[0]:
                    self._arm()  # the next request began in the same bytes
            else:
                self._give_up()

        def _give_up(self) -> None:
            self.shadow, self.in_head = None, False
            self._disarm()

        def _arm(self) -> None:
            if self.timer is None and self.in_head and not self.transport.is_closing():
                self.timer = asyncio.get_running_loop().call_later(read_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def _too_slow(self) -> None:
            self.timer = None
            if self.in_head and not self.transport.is_closing():
                peer = self.transport.get_extra_info("peername")
                client = f"{peer[0]}:{peer[1]}" if peer else "a client"
                log.warning("closed the connection of %s: no complete request within %g s", client, read_timeout_s)
                self.transport.close()

    return HeaderDeadline
