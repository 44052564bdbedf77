"""A network between the benchmark and its MCP servers: a TCP proxy that adds round-trip time.

`python -m bench.netem --rtt-ms 20 LISTEN_PORT:TARGET_PORT [...]` forwards
each listening port on 127.0.0.1 to its target, delaying every chunk by half
the RTT in each direction (order kept) and a new connection by one RTT before
its first byte moves on (the TCP handshake a real network would cost). One
process serves every pair, so the proxy's own CPU is a single extra process
on the machine, not one per server.

Why: on loopback, opening an MCP session is CPU only (the SDK, httpx, the
server), so N sessions opened concurrently still cost N times the CPU. What
concurrency saves is the waiting on the network that every real deployment
has; this puts that wait back, the same for every variant measured through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

CHUNK = 65536


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    """Copy reader → writer, each chunk delivered `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    finally:
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(Exception):
            await delivering


async def _serve_pair(listen: int, target: int, rtt: float) -> asyncio.Server:
    async def handle(client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(rtt)  # the handshake
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pump(client_reader, upstream_writer, rtt / 2),
                _pump(upstream_reader, client_writer, rtt / 2),
            )
        finally:
            for w in (upstream_writer, client_writer):
                w.close()

    return await asyncio.start_server(handle, "127.0.0.1", listen)


async def serve(pairs: Sequence[tuple[int, int]], rtt_ms: float) -> None:
    servers = [await _serve_pair(listen, target, rtt_ms / 1000) for listen, target in pairs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"netem: {len(servers)} port(s), {rtt_ms:g} ms RTT", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def _pair(text: str) -> tuple[int, int]:
    listen, _, target = text.partition(":")
    try:
        return int(listen), int(target)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LISTEN_PORT:TARGET_PORT, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.netem",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add")
    parser.add_argument("pairs", nargs="+", type=_pair, metavar="LISTEN_PORT:TARGET_PORT")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.pairs, args.rtt_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
