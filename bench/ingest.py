"""Sustained ingest: wrk at full speed (keep-alive) against nginx for N seconds, both in cgroups the
agent monitors, so every request is captured twice (wrk's client side and nginx's server side).
Reports the request rate reached, the kernel events/s the agent ingested, every loss counter, and
whether each request became exactly one client and one server record. The target is 0 lost
events at 50,000 requests/s for 60 s; the last line prints the events lost.

usage: python3 bench/ingest.py [--seconds 60] [--connections N] [--paced]
(--paced --connections 125 held 48,000-60,000 req/s on the 2-core CI machine)
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from wrk import run_wrk  # noqa: E402


def metric(text, name):
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.M):
        total += float(match.group(1))
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--paced", action="store_true",
                        help="1 ms between requests per connection: the rate follows --connections (~500 each)")
    args = parser.parse_args()

    with harness.workspace() as bench:
        server = bench.root.child("nginx")
        load = bench.root.child("wrk")
        port = harness.free_port()
        bench.start_nginx(server, port)
        agent = bench.start_agent()
        before = agent.metrics()
        requests, rate = run_wrk(bench, load, port, args.seconds, connections=args.connections, paced=args.paced)
        time.sleep(1.5)  # one stats period: the counters catch up
        after = agent.metrics()
        agent.stop()

        events = metric(after, "apiwarden_capture_records_total") - metric(before, "apiwarden_capture_records_total")
        lost = {reason: metric(after, f'apiwarden_capture_lost_total{{reason="{reason}"}}')
                for reason in ("ringbuf_full", "truncated", "map_full")}
        lost_total = metric(after, "apiwarden_capture_lost_total")
        http_records = metric(after, 'apiwarden_records_written_total{type="http"}')
        rejected = metric(after, "apiwarden_pipeline_events_rejected_total")
        parse_errors = metric(after, "apiwarden_http_parse_errors_total")
        write_errors = metric(after, "apiwarden_records_write_errors_total")  # output behind, or failing
        print(f"wrk: {requests} requests in {args.seconds}s = {rate:.0f} req/s (keep-alive, {args.connections} conns"
              f"{', paced' if args.paced else ', full speed'})")
        print(f"kernel events: {events:.0f} = {events / args.seconds:.0f} events/s")
        print(f"lost: {lost}; decoder rejected {rejected:.0f}; parse errors {parse_errors:.0f}; "
              f"records not written {write_errors:.0f}")
        print(f"http records {http_records:.0f} for {requests} requests wrk completed "
              f"(a client and a server record each; up to {args.connections} more may be in flight at the end)")
        ok = 2 * requests <= http_records <= 2 * (requests + args.connections) and rejected == 0 and parse_errors == 0 \
            and write_errors == 0
        print(f"every request recorded exactly once on each side: {'yes' if ok else 'NO'}")
        print(f"lost events at {rate:.0f} req/s sustained {args.seconds}s: {lost_total:.0f}")


if __name__ == "__main__":
    main()
