"""A TCP forwarder that lets the harness reach hosts inside network namespaces.

    ip netns exec HUB python -m chaos.netfwd FD=HOST:PORT [FD=HOST:PORT ...]

Each FD is a listening socket the harness bound on 127.0.0.1 in its own namespace and
passed down; this process runs in the hub namespace, so the connections it opens reach
the cluster's hosts. Bytes are copied both ways until either side closes.
"""

from __future__ import annotations

import socket
import sys

import trio

BUF = 256 * 1024


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    try:
        while data := await src.receive_some(BUF):
            await dst.send_all(data)
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def _forward(client: trio.SocketStream, host: str, port: int) -> None:
    try:
        upstream = await trio.open_tcp_stream(host, port)
    except OSError:
        await client.aclose()
        return
    async with client, upstream, trio.open_nursery() as nursery:
        nursery.start_soon(_pipe, client, upstream)
        nursery.start_soon(_pipe, upstream, client)


async def serve(routes: list[tuple[socket.socket, str, int]]) -> None:
    async with trio.open_nursery() as nursery:
        for sock, host, port in routes:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))

            async def handler(stream: trio.SocketStream, host: str = host, port: int = port) -> None:
                await _forward(stream, host, port)

            nursery.start_soon(trio.serve_listeners, handler, [listener])


def main(argv: list[str]) -> None:
    routes = []
    for spec in argv:
        fd, target = spec.split("=", 1)
        host, port = target.rsplit(":", 1)
        routes.append((socket.socket(fileno=int(fd)), host, int(port)))
    trio.run(serve, routes)


if __name__ == "__main__":
    main(sys.argv[1:])
