"""Request-rate cost of the in-kernel credential check: wrk (keep-alive, 16 connections, every
request carrying `Authorization: Bearer <benign token>`) against nginx, both in cgroups below the
agent's --cgroup-root, with the agent in --enforce enforce in both arms:
  off: no credential rule (wrk's sockets never join the sockhash: no sk_msg program runs);
  on:  a revoke rule for a different token, installed before wrk starts, so every connection wrk
       opens joins the sockhash and sk_msg scans each of its writes (and passes them).
The revoked token's fingerprint is learnt first: one curl carrying it, read back from the records.
Each "on" round checks that the check is live: a curl with the revoked token must fail at its
write. Both arms run the same curls (one benign, one with the other token) before wrk.

Rounds are interleaved, alternating which arm goes first (off,on / on,off / ...), so drift on a
noisy machine hits both alike; figures are medians (the median of the per-round ratios is printed
too, as a check on the ratio of medians). Each run also prints how much CPU the rest of the machine
used meanwhile (busy time in /proc/stat minus the benchmark's cgroups and the agent), so a round
disturbed by other work shows, and the median ratio over the undisturbed rounds is printed.
Prints the ratio on/off last (target >= 0.90).

--token-bytes N gives wrk a JWT-like token of N bytes instead of the short one (a 750-byte JWT is
common): the scan's cost grows with the head.

usage: python3 bench/credential_overhead.py [--rounds 10] [--seconds 4] [--connections 16] [--token-bytes N]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness  # noqa: E402

BENIGN = "tok-bench-benign-4f1c9a"
REVOKED = "tok-bench-revoked-7d02e5"
QUIET_CORES = 0.25


def jwt_like(size):
    """A token shaped like a JWT (header.payload.signature, base64url), size bytes long."""
    header, signature = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.", ".c2lnbmF0dXJlLWJlbmNo"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    payload = "".join(alphabet[(i * 7) % len(alphabet)] for i in range(max(size - len(header) - len(signature), 1)))
    return header + payload + signature


class Bench:
    def __init__(self, ws, args):
        self.ws = ws
        self.args = args
        self.pins = f"/sys/fs/bpf/apiwarden-bench-{os.getpid()}"
        self.socket = os.path.join(ws.workdir, "control.sock")
        self.monitored = ws.root.child("monitored")
        self.server = self.monitored.child("nginx")
        self.client = self.monitored.child("client")
        self.port = harness.free_port()
        # records (one per request) go to memory, emptied after every run: no disk writeback in the figures
        self.records = f"/dev/shm/apiwarden-bench-{os.getpid()}.jsonl"
        self.benign = jwt_like(args.token_bytes) if args.token_bytes else BENIGN

    def ctl(self, *args):
        return harness.apiwardenctl_ok(self.socket, *args)

    def start(self):
        self.ws.start_nginx(self.server, self.port)
        agent = harness.Agent(self.ws.workdir, self.monitored.path,
                              ["--enforce", "enforce", "--enforce-pin-dir", self.pins, "--control-socket",
                               self.socket, "--alerts", os.path.join(self.ws.workdir, "alerts.jsonl"),
                               "--learning-period", "3600"], records_path=self.records)
        self.ws.agent = agent
        harness.wait_for(lambda: "control socket" in agent.log_text() or agent.proc.poll() is not None,
                         timeout=20, what="the control socket")
        if agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited:\n{agent.log_text()}")

    def curl(self, token):
        """One request from the client cgroup on a new connection; returns (curl exit code, HTTP status)."""
        p = self.ws.spawn(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-H",
                           f"Authorization: Bearer {token}", f"http://127.0.0.1:{self.port}/api/x"],
                          self.client, stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
        return p.returncode, out.decode().strip()

    def learn_fingerprint(self):
        code, status = self.curl(REVOKED)
        if (code, status) != (0, "200"):
            raise RuntimeError(f"curl with the token to revoke failed: exit {code}, status {status}")
        records = self.ws.agent.wait_records(
            lambda r: r["type"] == "http" and r["direction"] == "client"
            and r["workload"]["cgroup_id"] == self.client.id and r.get("credential", {}).get("scheme") == "bearer",
            1, what="a client record with the bearer token")
        self.fingerprint = records[-1]["credential"]["fingerprint"]

    def cpu_seconds(self):
        """(CPU seconds the whole machine spent busy, of which the benchmark's cgroups and the agent)."""
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        machine = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
        with open(os.path.join(self.ws.root.path, "cpu.stat")) as f:
            ours = int(f.readline().split()[1]) / 1e6  # usage_usec
        with open(f"/proc/{self.ws.agent.proc.pid}/stat") as f:
            agent = sum(int(v) for v in f.read().rpartition(")")[2].split()[11:13]) / ticks  # utime, stime
        return machine, ours + agent

    def usage(self, cgroup):
        """CPU seconds the cgroup's processes have used so far."""
        with open(os.path.join(cgroup.path, "cpu.stat")) as f:
            return int(f.readline().split()[1]) / 1e6  # usage_usec

    def wrk(self):
        argv = ["wrk", "-t1", f"-c{self.args.connections}", f"-d{self.args.seconds}s", "-H",
                f"Authorization: Bearer {self.benign}", f"http://127.0.0.1:{self.port}/api/x"]
        time.sleep(1.2)  # the agent refreshes its metrics every second
        records_before, lost_before = self.kernel_records(), self.lost()
        before = self.cpu_seconds()
        client_before, server_before = self.usage(self.client), self.usage(self.server)
        out = self.ws.run_in(argv, self.client, timeout=self.args.seconds + 60).decode()
        client_after, server_after = self.usage(self.client), self.usage(self.server)
        after = self.cpu_seconds()
        time.sleep(1.2)
        records_after, lost_after = self.kernel_records(), self.lost()
        # CPU the rest of the machine took meanwhile (other work on a shared machine), in cores
        self.others = ((after[0] - before[0]) - (after[1] - before[1])) / self.args.seconds
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not rate:
            raise RuntimeError(f"wrk printed no figures:\n{out}")
        errors = re.search(r"Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise RuntimeError(f"wrk saw errors (is the benign token refused?):\n{out}")
        requests = float(rate.group(1)) * self.args.seconds
        self.client_us = 1e6 * (client_after - client_before) / requests
        self.server_us = 1e6 * (server_after - server_before) / requests
        self.records_per_request = (records_after - records_before) / requests
        self.lost_share = (lost_after - lost_before) / max(records_after - records_before, 1)
        return float(rate.group(1))

    def lost(self):
        match = re.search(r'^apiwarden_capture_lost_total\{reason="ringbuf_full"\} (\S+)', self.ws.agent.metrics(), re.M)
        return float(match.group(1))

    def kernel_records(self):
        """Records the kernel wrote to the ring buffer, and those it lost (ring buffer full)."""
        metrics = self.ws.agent.metrics()
        written = re.search(r"^apiwarden_capture_records_total (\S+)", metrics, re.M)
        lost = re.search(r'^apiwarden_capture_lost_total\{reason="ringbuf_full"\} (\S+)', metrics, re.M)
        return float(written.group(1)) + float(lost.group(1))

    def run_arm(self, on):
        rule = self.ctl("revoke", self.fingerprint, "--ttl", "600s", "--reason", "credential_overhead bench")["rule"] \
            if on else None
        try:
            benign = self.curl(self.benign)
            revoked = self.curl(REVOKED)
            if benign != (0, "200"):
                raise RuntimeError(f"benign curl failed: {benign}")
            if on and revoked[0] == 0:
                raise RuntimeError(f"the revoked token was not refused: {revoked}")
            if not on and revoked != (0, "200"):
                raise RuntimeError(f"with no rule the other token failed: {revoked}")
            rate = self.wrk()
            refused = self.ctl("list")["rules"][0]["counters"]["requests"] if on else None
        finally:
            if rule:
                self.ctl("restore", rule["id"])
            # records keep coming (one per request): keep the file small, alike in both arms
            os.truncate(self.ws.agent.records_path, 0)
        return rate, revoked, refused


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)  # saturates both cores, as http_overhead.py
    parser.add_argument("--token-bytes", type=int, default=0, help="a JWT-like token of this size (default: 23 bytes)")
    args = parser.parse_args()

    started = time.monotonic()
    rates = {False: [], True: []}
    others = {False: [], True: []}
    client_us = {False: [], True: []}
    with harness.workspace() as ws:
        bench = Bench(ws, args)
        try:
            bench.start()
            bench.learn_fingerprint()
            print(f"revoking fingerprint {bench.fingerprint} in the 'on' arm; wrk -c{args.connections} "
                  f"-d{args.seconds}s keep-alive with another bearer token ({len(bench.benign)} bytes)", flush=True)
            for round_ in range(args.rounds):
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for on in order:
                    rate, revoked, refused = bench.run_arm(on)
                    rates[on].append(rate)
                    others[on].append(bench.others)
                    client_us[on].append(bench.client_us)
                    check = (f"  revoked-token curl: exit {revoked[0]} (refused at its write), rule counted "
                             f"{refused} refused request(s)") if on else ""
                    print(f"round {round_ + 1:2} credential check {'on ' if on else 'off'} {rate:10.0f} req/s  "
                          f"wrk {bench.client_us:.2f} us/request, nginx {bench.server_us:.2f}  "
                          f"({bench.records_per_request:.2f} kernel records/request, {100 * bench.lost_share:.1f}% lost)  "
                          f"(other work on the machine: {bench.others:.2f} cores){check}", flush=True)
        finally:
            if ws.agent:
                ws.agent.stop()  # then unpin: removing the pin dir detaches the programs
            shutil.rmtree(bench.pins, ignore_errors=True)
            if os.path.exists(bench.records):
                os.unlink(bench.records)

    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    per_round = [b / a for a, b in zip(rates[False], rates[True])]
    print(f"per-round ratios on/off: {' '.join(f'{r:.3f}' for r in per_round)} "
          f"(median {statistics.median(per_round):.3f})")
    quiet = [r for r, a, b in zip(per_round, others[False], others[True]) if max(a, b) < QUIET_CORES]
    if quiet:
        print(f"rounds where other work took < {QUIET_CORES} cores in both runs: {len(quiet)}/{len(per_round)}, "
              f"median ratio {statistics.median(quiet):.3f}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    print(f"keep-alive, {args.connections} connections: median off {off:.0f} req/s, on {on:.0f} req/s")
    print(f"wrk's CPU per request (its cgroup): median off {statistics.median(client_us[False]):.2f} us, "
          f"on {statistics.median(client_us[True]):.2f} us")
    print(f"credential check on/off request-rate ratio (target >= 0.90): {on / off:.3f}")


if __name__ == "__main__":
    main()
