"""Integration-test harness: cgroups, processes, servers and the agent, all cleaned up.

Everything a test creates lives under one cgroup directory of its own
(/sys/fs/cgroup/<v2 mount>/apiwarden-it-<pid>-<n>) and is removed at the end, also on failure.
Processes are started inside their cgroup (a socket's cgroup is fixed at creation) and ended by
their pid. Traffic stays on loopback.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("APIWARDEN_BUILD", os.path.join(REPO, "build"))
AGENT = os.path.join(BUILD, "bin", "apiwarden-agent")
CTL = os.path.join(BUILD, "bin", "apiwardenctl")


def apiwardenctl(socket_path, *args):
    """Runs apiwardenctl --json against an agent's control socket: (exit code, the agent's answer as a
    dict, or {"ok": False, "error": <stderr>} when there was none)."""
    p = subprocess.run([CTL, "--socket", socket_path, "--json", *args], capture_output=True, text=True, timeout=30)
    answer = json.loads(p.stdout) if p.stdout.strip() else {"ok": False, "error": p.stderr}
    return p.returncode, answer


def apiwardenctl_ok(socket_path, *args):
    """apiwardenctl that must succeed: the agent's answer, or RuntimeError."""
    code, answer = apiwardenctl(socket_path, *args)
    if code != 0 or not answer.get("ok"):
        raise RuntimeError(f"apiwardenctl {' '.join(args)}: {answer}")
    return answer


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return left.split()[4]
    raise RuntimeError("no cgroup2 mount")


def free_port(family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_port(port, host="127.0.0.1", timeout=10.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def ready():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            return s.connect_ex((host, port)) == 0
    wait_for(ready, timeout, what=f"port {host}:{port}")


class Cgroup:
    """A cgroup v2 directory created (and removed) by the test."""

    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.id = os.stat(path).st_ino
        self.rel = "/" + os.path.relpath(path, cgroup2_mount())

    def child(self, name):
        return Cgroup(os.path.join(self.path, name))

    def kill_all(self):
        procs = os.path.join(self.path, "cgroup.procs")
        for _ in range(50):
            try:
                with open(procs) as f:
                    pids = [int(p) for p in f.read().split()]
            except FileNotFoundError:
                return
            if not pids:
                return
            for pid in pids:  # only processes this test started live here
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def remove(self):
        for root, dirs, _ in os.walk(self.path, topdown=False):
            for d in dirs:
                Cgroup.kill_dir(os.path.join(root, d))
        Cgroup.kill_dir(self.path)

    @staticmethod
    def kill_dir(path):
        c = object.__new__(Cgroup)
        c.path = path
        c.kill_all()
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)


class Agent:
    """The real apiwarden-agent, monitoring one cgroup subtree, writing records to a file."""

    def __init__(self, workdir, cgroup_root, extra_args=(), records_path=None, binary=None):
        self.records_path = records_path or os.path.join(workdir, "records.jsonl")
        self.log_path = os.path.join(workdir, "agent.log")
        self.metrics_port = free_port()
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary or AGENT, "--records", self.records_path, "--cgroup-root", cgroup_root,
             "--state-dir", os.path.join(workdir, "state"),
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: b"monitoring cgroup" in self.log_text().encode() or self.proc.poll() is not None,
                 timeout=20, what="agent start")
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited at start:\n{self.log_text()}")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def records(self):
        if not os.path.exists(self.records_path):
            return []
        with open(self.records_path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def wait_records(self, predicate, count, timeout=15.0, what="records"):
        def enough():
            matched = [r for r in self.records() if predicate(r)]
            return matched if len(matched) >= count else None
        try:
            return wait_for(enough, timeout, what=f"{count} {what}")
        except AssertionError:
            got = len([r for r in self.records() if predicate(r)])
            raise AssertionError(f"expected {count} {what}, got {got}; agent log:\n{self.log_text()[-3000:]}")

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class IntegrationTest(unittest.TestCase):
    """Base class: a private cgroup tree, a temp dir, and cleanup of both."""

    _counter = 0

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("integration tests need root")
        if not os.path.exists(AGENT):
            self.fail(f"agent binary missing: {AGENT} (run make build)")
        IntegrationTest._counter += 1
        self.workdir = tempfile.mkdtemp(prefix="apiwarden-it-")
        self.root = Cgroup(os.path.join(cgroup2_mount(), f"apiwarden-it-{os.getpid()}-{IntegrationTest._counter}"))
        self.procs = []
        self.agent = None
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.agent:
            self.agent.stop()
        self.root.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start_agent(self, *extra_args):
        self.agent = Agent(self.workdir, self.root.path, extra_args)
        return self.agent

    def spawn(self, argv, cgroup, **kwargs):
        """Starts argv inside cgroup: the child joins it before exec."""
        procs_file = os.path.join(cgroup.path, "cgroup.procs")

        def join():
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(argv, preexec_fn=join, **kwargs)
        self.procs.append(p)
        return p

    def run_in(self, argv, cgroup, timeout=60, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        p = self.spawn(argv, cgroup, **kwargs)
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"{argv[0]} failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
        return out

    def start_nginx(self, cgroup, port, ipv6_port=None, tls=None, tls_directives=""):
        """A real nginx serving fixed responses; tls=(cert, key) makes port an HTTPS listener."""
        conf_dir = tempfile.mkdtemp(dir=self.workdir, prefix="nginx-")
        root = os.path.join(conf_dir, "www")
        os.makedirs(os.path.join(root, "api"))
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("hello from nginx\n")
        listen = f"listen 127.0.0.1:{port}{' ssl' if tls else ''};"
        if ipv6_port:
            listen += f"\n    listen [::1]:{ipv6_port};"
        ssl = f"ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};\n    {tls_directives}" if tls else ""
        conf = f"""
daemon off;
master_process off;
worker_processes 1;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 100000;
  large_client_header_buffers 4 32k;
  client_body_temp_path {conf_dir}/body;
  proxy_temp_path {conf_dir}/proxy;
  fastcgi_temp_path {conf_dir}/fastcgi;
  uwsgi_temp_path {conf_dir}/uwsgi;
  scgi_temp_path {conf_dir}/scgi;
  server {{
    {listen}
    {ssl}
    root {root};
    location /api/ {{ return 200 '{{"ok":true}}\\n'; }}
    location /missing {{ return 404; }}
    location /created {{ return 201 'created\\n'; }}
  }}
}}
"""
        conf_path = os.path.join(conf_dir, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        p = self.spawn(["nginx", "-c", conf_path, "-e", os.path.join(conf_dir, "error.log")], cgroup)
        wait_port(port)
        if ipv6_port:
            wait_port(ipv6_port, "::1")
        return p

    def make_cert(self, name, ip=False, stem="cert"):
        """A self-signed certificate for a DNS name (or, ip=True, an IP address)."""
        cert = os.path.join(self.workdir, f"{stem}.pem")
        key = os.path.join(self.workdir, f"{stem}-key.pem")
        san = f"IP:{name}" if ip else f"DNS:{name}"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        return cert, key


@contextlib.contextmanager
def workspace():
    """The integration fixture outside unittest (benchmarks): cgroups, servers and agent, cleaned up."""
    class Workspace(IntegrationTest):
        def runTest(self):
            pass
    w = Workspace()
    w.setUp()
    try:
        yield w
    finally:
        w.doCleanups()


def http_records(records, cgroup, direction):
    return [r for r in records if r["type"] == "http" and r["workload"]["cgroup_id"] == cgroup.id
            and r["direction"] == direction]


def connection_records(records, cgroup, direction):
    return [r for r in records if r["type"] == "connection" and r["workload"]["cgroup_id"] == cgroup.id
            and r["direction"] == direction]
