"""Request-rate cost of capture: wrk against nginx in a monitored cgroup, agent attached vs not.

Runs are interleaved (off, on, off, on, ...) so drift on a noisy machine hits both sides alike;
the figures are medians. Prints the keep-alive and new-connection ratios, the last line being
the keep-alive ratio (target >= 0.95; new connection per request >= 0.85).

usage: python3 bench/http_overhead.py [--rounds 5] [--seconds 5]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness  # noqa: E402


def wrk(port, seconds, close, cgroup, bench):
    argv = ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/api/x"]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = bench.run_in(argv, cgroup, timeout=seconds + 30).decode()
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1))


class Bench(harness.IntegrationTest):
    def runTest(self):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    bench = Bench()
    bench.setUp()
    try:
        monitored = bench.root.child("monitored")
        server = monitored.child("nginx")
        load = bench.root.child("load")  # outside the monitored subtree
        port = harness.free_port()
        bench.start_nginx(server, port)
        results = {(close, on): [] for close in (False, True) for on in (False, True)}
        for round_ in range(args.rounds):
            for close in (False, True):
                for on in (False, True):
                    agent = harness.Agent(tempfile.mkdtemp(dir=bench.workdir), monitored.path,
                                          records_path=os.devnull) if on else None
                    try:
                        rate = wrk(port, args.seconds, close, load, bench)
                    finally:
                        if agent:
                            lost = re.search(r'apiwarden_capture_lost_total\{reason="ringbuf_full"\} (\d+)',
                                             agent.metrics())
                            agent.stop()
                    results[(close, on)].append(rate)
                    extra = f" lost={lost.group(1)}" if on and lost else ""
                    print(f"round {round_ + 1} {'close ' if close else 'keepalive'} agent={'on ' if on else 'off'}"
                          f" {rate:10.0f} req/s{extra}", flush=True)
        ratios = {}
        for close in (False, True):
            off, on = statistics.median(results[(close, False)]), statistics.median(results[(close, True)])
            ratios[close] = on / off
            print(f"{'new connection per request' if close else 'keep-alive'}: median off {off:.0f} req/s, "
                  f"on {on:.0f} req/s, ratio {on / off:.3f}")
        print(f"new-connection ratio (target >= 0.85): {ratios[True]:.3f}")
        print(f"keep-alive ratio (target >= 0.95): {ratios[False]:.3f}")
    finally:
        bench.doCleanups()


if __name__ == "__main__":
    main()
