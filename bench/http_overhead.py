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
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from wrk import run_wrk  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    with harness.workspace() as bench:
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
                        _, rate = run_wrk(bench, load, port, args.seconds, close=close)
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


if __name__ == "__main__":
    main()
