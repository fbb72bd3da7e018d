#!/usr/bin/env python3
"""herdsman worker for the I/O-bound example: look every id up on server.py (framed protocol).

usage: python3 worker.py [BASE_URL]      (default: $LOOKUP_URL, else http://127.0.0.1:8765)

For each request {"id":N,"record":{"id":"42"}} on stdin it GETs BASE_URL/lookup?id=42 and
answers {"id":N,"output":<the server's JSON>,"done":true}. Failures become
{"id":N,"error":"…","retryable":…}: throttling (429), unavailability (503, other 5xx) and
network errors are retryable, so herdsman backs off and asks again; 404 and other 4xx are
not, and the record goes to the dead-letter file. When the server sent a Retry-After header
(seconds or an HTTP date), the reply passes it on as "retry_after": SECONDS, and herdsman
waits that long before the retry and holds back every other request meanwhile.
Standard library only.

By hand:
    echo '{"id":1,"record":{"id":"42"}}' | python3 worker.py http://127.0.0.1:PORT
"""
import email.utils
import json
import math
import os
import sys
import time
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
        raise LookupFailed(
            message,
            retryable=err.code == 429 or err.code >= 500,
            retry_after=seconds_from(retry_after),
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise LookupFailed(f"GET {url}: {reason}; is the server running?", retryable=True) from None


def seconds_from(retry_after):
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from now, or None."""
    if not retry_after:
        return None
    try:
        seconds = float(retry_after)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LookupFailed(Exception):
    def __init__(self, message: str, retryable: bool, retry_after=None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


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
            reply = {"id": rid, "error": str(err), "retryable": err.retryable}
            if err.retryable and err.retry_after is not None:
                reply["retry_after"] = err.retry_after
            reply = dumps(reply)
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
