"""Load the emulator and report requests/s (run by hand, not by pytest).

    .venv/bin/python bench/emulator.py --seconds 5 --procs 3 --conns 8

The emulator runs as a child process (``llm-throttle emulator``) with zero latency and
limits high enough that every request is admitted, unless ``--limits`` says otherwise.
Clients are processes with raw keep-alive sockets (``--client raw``, the default: each
sends one request per connection, then reads every answer) or threads with
``requests.Session`` (``--client requests``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from testing.emulator import (
    EmulatorConfig,
    EmulatorProcess,
    PoolConfig,
    parse_limits_text,
)

BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello to the benchmark, please."}],
        "max_tokens": 64,
    }
).encode()


def raw_request(port: int) -> bytes:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Authorization: Bearer sk-bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


def read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one response from ``sock`` (leftovers stay in ``buffer``); return its status."""
    while True:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = bytes(buffer[:head_end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            total = head_end + 4 + length
            if len(buffer) >= total:
                status = int(head.split(" ", 2)[1])
                del buffer[:total]
                return status
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk


def raw_client(
    port: int, conns: int, seconds: float, out: multiprocessing.Queue[Counter[int]]
) -> None:
    request = raw_request(port)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffers = [bytearray() for _ in socks]
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock in socks:
            sock.sendall(request)
        for sock, buffer in zip(socks, buffers, strict=True):
            statuses[read_response(sock, buffer)] += 1
    for sock in socks:
        sock.close()
    out.put(statuses)


def requests_client(
    base_url: str, seconds: float, statuses: Counter[int], lock: threading.Lock
) -> None:
    session = requests.Session()
    local: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = session.post(
            base_url + "/v1/chat/completions",
            data=BODY,
            headers={"Authorization": "Bearer sk-bench", "Content-Type": "application/json"},
        )
        local[response.status_code] += 1
    with lock:
        statuses.update(local)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=3, help="client processes (raw) or threads")
    parser.add_argument("--conns", type=int, default=8, help="connections per raw client process")
    parser.add_argument("--client", choices=["raw", "requests"], default="raw")
    parser.add_argument("--limits", default="requests=1M/s,tokens=1000M/s")
    args = parser.parse_args()

    config = EmulatorConfig(pools=(PoolConfig("bench", parse_limits_text(args.limits)),))
    with EmulatorProcess(config) as emulator:
        started = time.monotonic()
        statuses: Counter[int] = Counter()
        if args.client == "raw":
            queue: multiprocessing.Queue[Counter[int]] = multiprocessing.Queue()
            workers = [
                multiprocessing.Process(
                    target=raw_client, args=(emulator.port, args.conns, args.seconds, queue)
                )
                for _ in range(args.procs)
            ]
            for worker in workers:
                worker.start()
            for _ in workers:
                statuses.update(queue.get())
            for worker in workers:
                worker.join()
        else:
            lock = threading.Lock()
            threads = [
                threading.Thread(
                    target=requests_client, args=(emulator.base_url, args.seconds, statuses, lock)
                )
                for _ in range(args.procs)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        elapsed_s = time.monotonic() - started
        stats = requests.get(emulator.base_url + "/__emu/stats", timeout=5).json()
    total = sum(statuses.values())
    print(
        f"client={args.client} procs={args.procs} conns={args.conns}: {total} requests in"
        f" {elapsed_s:.2f} s = {total / elapsed_s:,.0f} requests/s; statuses {dict(statuses)};"
        f" emulator admitted {stats['admitted']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
