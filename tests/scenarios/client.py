"""A scenario client: requests over one keep-alive connection, paced (benign) or as fast as it can.

usage: client.py SPEC_JSON   where SPEC is {"port", "method", "paths", "headers", "count" | "rate"}
"{i}" in a path becomes 1..20 (benign, cycling) or 1..count (a scenario's own walk).
"""
import http.client
import json
import sys
import time

spec = json.loads(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", spec["port"])
body = b"{}" if spec["method"] in ("POST", "PUT", "PATCH") else None
rate = spec.get("rate")
count = spec.get("count")
interval = 1.0 / rate if rate else 0
next_at = time.monotonic()
n = 0
while count is None or n < count:
    path = spec["paths"][n % len(spec["paths"])]
    path = path.replace("{i}", str((n % 20) + 1 if rate else n + 1))
    conn.request(spec["method"], path, body=body, headers=spec["headers"])
    r = conn.getresponse()
    r.read()
    n += 1
    if rate:  # paced without catching up: a stall never turns into a burst
        next_at = max(next_at + interval, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
conn.close()
