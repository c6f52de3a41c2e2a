"""wrk runs for the benchmarks: a load generator started inside a cgroup, its figures parsed."""
import os
import re


PACED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paced.lua")


def run_wrk(bench, cgroup, port, seconds, connections=16, close=False, paced=False):
    """Returns (requests completed, requests/s). paced: 1 ms between requests on each connection."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/api/x"]
    if paced:
        argv[1:1] = ["-s", PACED]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = bench.run_in(argv, cgroup, timeout=seconds + 60).decode()
    requests = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not requests or not rate:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    return int(requests.group(1)), float(rate.group(1))
