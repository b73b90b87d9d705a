"""The process ExaBGP runs: relays its API (commands in, acknowledgements and events out) to `edgeplane bgp run`.

ExaBGP talks to a helper over the helper's stdin and stdout. `bgp run` listens on a Unix socket; this relay
joins the two, so the speaker that owns the state also reads every acknowledgement itself."""

from __future__ import annotations

import os
import socket
import sys
import threading


def _pump(read: int, write: int) -> None:
    try:
        while chunk := os.read(read, 65536):
            view = memoryview(chunk)
            while view:
                view = view[os.write(write, view) :]
    except OSError:
        pass


def _pump_then_close(read: int, sock: socket.socket) -> None:
    _pump(read, sock.fileno())
    try:
        sock.shutdown(socket.SHUT_RDWR)  # ExaBGP went away: end the other direction too
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgeplane.speaker._bridge SOCKET", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(argv[0])
        # ExaBGP -> speaker in a thread; speaker -> ExaBGP here. Either side closing ends the relay, and
        # ExaBGP, losing its helper, stops: the speaker then restarts both and announces everything again.
        inbound = threading.Thread(target=_pump_then_close, args=(sys.stdin.fileno(), sock), daemon=True)
        inbound.start()
        _pump(sock.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
