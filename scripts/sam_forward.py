"""Forward HOST:PORT to 127.0.0.1:PORT for each port: sam_forward.py HOST PORT...

The local stack's emulators listen on 127.0.0.1 only, and `sam local` runs each function in a
container on Docker's bridge, where 127.0.0.1 is the container itself (SAM's `--docker-network
host` does not give the container the host's network: SAM skips attaching it to a network at
all). Listening on the bridge's address on this host makes the same ports reachable from the
containers without exposing the emulators to other machines.
"""

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def forwarder(port: int):
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))

    return handle


async def main() -> None:
    host, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    servers = [await asyncio.start_server(forwarder(p), host, p) for p in ports]
    print(f"forwarding {host}:{{{','.join(map(str, ports))}}} to 127.0.0.1", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
