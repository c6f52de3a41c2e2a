"""A workload's client for the enforcement tests: requests in a loop until SIGTERM (or --count),
then prints what happened as JSON: successes, failures by error, and when the first failure and
the last success after it happened. Reconnects after every failure; --new-connection opens one
connection per request, else keep-alive."""
import argparse
import errno
import http.client
import json
import signal
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", default="")
    p.add_argument("--path", default="/api/orders")
    p.add_argument("--interval", type=float, default=0.005)
    p.add_argument("--count", type=int, default=0, help="stop after this many requests (0: until SIGTERM)")
    p.add_argument("--new-connection", action="store_true")
    args = p.parse_args()

    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)

    result = {"ok": 0, "failed": 0, "errors": {}, "first_failure": None, "last_ok": None, "last_failure": None}
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    conn = None
    done = 0
    while not stop and (args.count == 0 or done < args.count):
        done += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            conn.request("GET", args.path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            result["ok"] += 1
            result["last_ok"] = time.time()
            if args.new_connection:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is counted by its kind
            name = errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)
            result["failed"] += 1
            result["errors"][name] = result["errors"].get(name, 0) + 1
            now = time.time()
            result["first_failure"] = result["first_failure"] or now
            result["last_failure"] = now
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(args.interval)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
