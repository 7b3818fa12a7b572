"""Traffic: a small load generator that runs inside the ``haproxy`` container.

It sends a steady rate of GET requests to a few API paths through HAProxy on
127.0.0.1:80 (new connection per request, so round-robin spreads them over every
node). It is bounded: it stops by itself after ``--duration`` seconds, and caps the
requests in flight so a slow node cannot make it pile up. ``lab up`` (re)starts it.
"""

from __future__ import annotations

#: Paths the load generator cycles through (the stand-in serves all of them).
LOADGEN_PATHS = ("/api/v1/tracks", "/api/v1/users/me", "/api/v1/tracks/42", "/api/v1/playlists")

LOADGEN_PROGRAM = r'''#!/usr/bin/python3
"""veza lab load generator (written by veza-canary lab). Bounded in rate, concurrency and time."""
import argparse
import http.client
import itertools
import sys
import threading
import time
from urllib.parse import urlsplit

PATHS = @PATHS@


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:80")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=4 * 3600.0)
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=15.0)
    a = ap.parse_args()
    if not 0 < a.rate <= 1000 or not 0 < a.duration <= 7 * 86400:
        sys.exit("loadgen: rate or duration out of range")
    u = urlsplit(a.url)
    host, port = u.hostname, u.port or 80
    slots = threading.BoundedSemaphore(a.max_in_flight)
    stats = {"sent": 0, "skipped": 0, "errors": 0}
    lock = threading.Lock()

    def one(path):
        try:
            conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
            conn.request("GET", path, headers={"Connection": "close", "User-Agent": "veza-lab-loadgen"})
            conn.getresponse().read()
            conn.close()
        except Exception:
            with lock:
                stats["errors"] += 1
        finally:
            slots.release()

    interval = 1.0 / a.rate
    start = time.monotonic()
    end = start + a.duration
    next_report = start + 60
    paths = itertools.cycle(PATHS)
    n = 0
    while True:
        due = start + n * interval
        now = time.monotonic()
        if due >= end:
            break
        if due > now:
            time.sleep(due - now)
        n += 1
        if not slots.acquire(blocking=False):
            stats["skipped"] += 1
            continue
        stats["sent"] += 1
        threading.Thread(target=one, args=(next(paths),), daemon=True).start()
        if time.monotonic() >= next_report:
            next_report += 60
            print("loadgen: sent=%(sent)d skipped=%(skipped)d errors=%(errors)d" % stats, flush=True)
    print("loadgen: duration reached, stopping: sent=%(sent)d skipped=%(skipped)d errors=%(errors)d"
          % stats, flush=True)


if __name__ == "__main__":
    main()
'''


def loadgen_program() -> str:
    return LOADGEN_PROGRAM.replace("@PATHS@", repr(list(LOADGEN_PATHS)))


def traffic_rate_query(rate_window: str = "10s") -> str:
    """PromQL: API requests per second reaching the nodes (health checks excluded)."""
    return (
        'sum(rate(veza_gin_http_request_duration_seconds_count'
        f'{{job="veza-backend-api",path!="/api/v1/health"}}[{rate_window}]))'
    )
