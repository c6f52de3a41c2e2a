"""Request-rate cost of capture: wrk against nginx in a monitored cgroup, agent attached vs not.

Runs are interleaved (off, on, off, on, ...) so drift on a noisy machine hits both sides alike;
the figures are medians. Also prints the agent's own CPU time per request, a steadier figure than
the ratio on a busy two-core machine; --baseline-agent runs another build side by side. Prints the
keep-alive and new-connection ratios, the last line being the keep-alive ratio (target >= 0.95; new
connection per request >= 0.85).

usage: python3 bench/http_overhead.py [--rounds 5] [--seconds 5] [--baseline-agent OTHER/bin/apiwarden-agent]
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


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--baseline-agent", help="another build's apiwarden-agent, run side by side as 'baseline'")
    args = parser.parse_args()

    with harness.workspace() as bench:
        monitored = bench.root.child("monitored")
        server = monitored.child("nginx")
        load = bench.root.child("load")  # outside the monitored subtree
        port = harness.free_port()
        bench.start_nginx(server, port)
        # "on" is the default agent; "on-no-tls" leaves out the TLS plaintext probes, to show what they
        # cost plaintext traffic (nothing, by design: no syscall hook).
        configs = {"off": None, "on": [], "on-no-tls": ["--no-tls-plaintext"]}
        if args.baseline_agent:
            configs["baseline"] = []
        results = {(close, name): [] for close in (False, True) for name in configs}
        cpu_us = {(close, name): [] for close in (False, True) for name in configs}
        for round_ in range(args.rounds):
            for close in (False, True):
                for name, agent_args in configs.items():
                    agent = harness.Agent(tempfile.mkdtemp(dir=bench.workdir), monitored.path, agent_args,
                                          records_path=os.devnull,
                                          binary=args.baseline_agent if name == "baseline" else None) \
                        if agent_args is not None else None
                    lost = None
                    cpu_before = cpu_seconds(agent.proc.pid) if agent else 0.0  # start-up is not the load's
                    try:
                        requests, rate = run_wrk(bench, load, port, args.seconds, close=close)
                    finally:
                        if agent:
                            lost = re.search(r'apiwarden_capture_lost_total\{reason="ringbuf_full"\} (\d+)',
                                             agent.metrics())
                            cpu = cpu_seconds(agent.proc.pid) - cpu_before
                            agent.stop()
                    results[(close, name)].append(rate)
                    extra = ""
                    if agent:
                        cpu_us[(close, name)].append(cpu * 1e6 / requests)
                        extra = f" lost={lost.group(1) if lost else '?'} agent {cpu_us[(close, name)][-1]:.2f} us/request"
                    print(f"round {round_ + 1} {'close    ' if close else 'keepalive'} agent={name:9} {rate:10.0f} req/s"
                          f"{extra}", flush=True)
        ratios = {}
        for close in (False, True):
            off = statistics.median(results[(close, "off")])
            for name in [n for n in configs if n != "off"]:
                on = statistics.median(results[(close, name)])
                ratios[(close, name)] = on / off
                print(f"{'new connection per request' if close else 'keep-alive'}: median off {off:.0f} req/s, "
                      f"{name} {on:.0f} req/s, ratio {on / off:.3f}, "
                      f"agent CPU {statistics.median(cpu_us[(close, name)]):.2f} us/request")
        print(f"new-connection ratio (target >= 0.85): {ratios[(True, 'on')]:.3f}")
        print(f"keep-alive ratio (target >= 0.95): {ratios[(False, 'on')]:.3f}")


if __name__ == "__main__":
    main()
