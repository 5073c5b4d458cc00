"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection.

With `--workers N` uvicorn binds the listening socket itself as `socket(AF_INET)`, whose
protocol number is 0, and asyncio only sets TCP_NODELAY on sockets whose protocol is
IPPROTO_TCP. Each response (headers, then body) then waits ~40 ms for the client's delayed
ACK. Setting the option on each connection restores millisecond answers.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: large usage batches parse several times
    faster than with the pure-Python h11) with TCP_NODELAY set on each connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
