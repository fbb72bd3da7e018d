#!/usr/bin/env python3
"""herdsman worker for the I/O-bound example: look every id up on server.py (framed protocol).

usage: python3 worker.py [BASE_URL]      (default: $LOOKUP_URL, else http://127.0.0.1:8765)

For each request {"id":N,"record":{"id":"42"}} on stdin it GETs BASE_URL/lookup?id=42 and
answers {"id":N,"output":<the server's JSON>,"done":true}. Failures become
{"id":N,"error":"…","retryable":…}: throttling (429), unavailability (503, other 5xx) and
network errors are retryable, so herdsman backs off and asks again; 404 and other 4xx are
not, and the record goes to the dead-letter file. Standard library only.

By hand:
    echo '{"id":1,"record":{"id":"42"}}' | python3 worker.py http://127.0.0.1:PORT
"""
import json
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

BASE = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOOKUP_URL", "http://127.0.0.1:8765")).rstrip("/")
dumps = json.JSONEncoder(separators=(",", ":")).encode


def lookup(record: dict) -> dict:
    """The server's answer for one record; raises LookupFailed when there is none."""
    if "id" not in record:
        raise LookupFailed("record has no 'id' column", retryable=False)
    url = f"{BASE}/lookup?id={quote(str(record['id']))}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace").strip()
        retry_after = err.headers.get("Retry-After")
        message = f"GET {url}: HTTP {err.code} {err.reason}: {detail}"
        if retry_after:
            message += f" (Retry-After: {retry_after})"
        raise LookupFailed(message, retryable=err.code == 429 or err.code >= 500) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise LookupFailed(f"GET {url}: {reason}; is the server running?", retryable=True) from None


class LookupFailed(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        rid = request["id"]
        try:
            output = lookup(request["record"])
            reply = dumps({"id": rid, "output": output, "done": True})
        except LookupFailed as err:
            reply = dumps({"id": rid, "error": str(err), "retryable": err.retryable})
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
