#!/usr/bin/env python3
"""A small, flaky, rate-limited lookup service for the I/O-bound example.

usage: python3 server.py PORT [--limit N]        (PORT 0 picks a free port)

Listens on 127.0.0.1 and prints `listening on http://127.0.0.1:PORT` once it is ready.
  GET /lookup?id=N  ->  200 {"id":N,"name":"item-N","score":…}   after a short delay
                        404 when N is not in 1..=10000, 400 when it is not an integer
                        429 with Retry-After: 1 when more than --limit (20) requests arrived
                            in the last second
                        503 on the first request for every id with id % 20 == 7 (about 5% of
                            ids, always the same ones); asking again succeeds
  GET /stats        ->  {"200":…,"404":…,"429":…,"503":…} counts so far
Standard library only; stop it with Ctrl-C or SIGTERM.
"""
import argparse
import collections
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

KNOWN_IDS = range(1, 10001)


class State:
    """What the handlers share: the rate window, the ids already failed once, the counts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.recent = collections.deque()  # arrival times within the last second
        self.failed_once = set()
        self.counts = collections.Counter()

    def over_limit(self) -> bool:
        now = time.monotonic()
        with self.lock:
            while self.recent and now - self.recent[0] >= 1.0:
                self.recent.popleft()
            self.recent.append(now)
            return len(self.recent) > self.limit

    def first_failure(self, ident: int) -> bool:
        """True the first time a flaky id is asked for."""
        with self.lock:
            if ident % 20 != 7 or ident in self.failed_once:
                return False
            self.failed_once.add(ident)
            return True


class Handler(BaseHTTPRequestHandler):
    state: State  # set in main()

    def reply(self, status: int, body: dict, headers: dict = {}) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        with self.state.lock:
            self.state.counts[str(status)] += 1

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/stats":
            with self.state.lock:
                counts = dict(self.state.counts)
            return self.reply(200, counts)
        if url.path != "/lookup":
            return self.reply(404, {"error": f"no such endpoint {url.path}; use /lookup?id=N"})
        if self.state.over_limit():
            return self.reply(429, {"error": "rate limit exceeded"}, {"Retry-After": "1"})
        raw = parse_qs(url.query).get("id", [""])[0]
        try:
            ident = int(raw)
        except ValueError:
            return self.reply(400, {"error": f"id must be an integer, got {raw!r}"})
        if ident not in KNOWN_IDS:
            return self.reply(404, {"error": f"no item with id {ident}"})
        if self.state.first_failure(ident):
            return self.reply(503, {"error": "temporarily unavailable"}, {"Retry-After": "1"})
        time.sleep(0.02 + (ident % 5) * 0.01)  # the "database"
        self.reply(200, {"id": ident, "name": f"item-{ident}", "score": ident * 7919 % 1000})

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request would drown the example's output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--limit", type=int, default=20, help="requests per second before 429")
    args = parser.parse_args()
    Handler.state = State(args.limit)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
