"""Capture across a veth pair: the server lives in a network namespace this test creates."""
import contextlib
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import IntegrationTest, wait_for  # noqa: E402

HOST_IP, NS_IP = "169.254.77.1", "169.254.77.2"  # link-local, on the test's own veth pair only

SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = b'{"user":' + self.path.rsplit("/", 1)[-1].encode() + b'}'
        self.send_response(200 if self.path.startswith("/users/") else 404)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""

CLIENT = r"""
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
for i in range(int(sys.argv[3])):
    conn.request("GET", f"/users/{i}", headers={"Cookie": "session=abc"})
    r = conn.getresponse(); r.read()
"""


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetnsTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.ns = f"apiwarden-it-{os.getpid()}"
        self.veth = f"awv{os.getpid() % 100000}"
        ip("netns", "add", self.ns)
        self.addCleanup(self._remove_netns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", self.veth + "p")
        ip("link", "set", self.veth + "p", "netns", self.ns)
        ip("addr", "add", f"{HOST_IP}/30", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("-n", self.ns, "addr", "add", f"{NS_IP}/30", "dev", self.veth + "p")
        ip("-n", self.ns, "link", "set", self.veth + "p", "up")
        ip("-n", self.ns, "link", "set", "lo", "up")

    def _remove_netns(self):
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", self.veth)  # removes the peer too
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", self.ns)

    def test_requests_over_veth_to_a_server_in_another_namespace(self):
        server_cg, client_cg = self.root.child("server"), self.root.child("client")
        port = 18000 + os.getpid() % 1000
        self.spawn(["ip", "netns", "exec", self.ns, sys.executable, "-c", SERVER, NS_IP, str(port)], server_cg)

        def server_up():
            probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                    f"http://{NS_IP}:{port}/ready"], capture_output=True, text=True)
            return probe.stdout == "404"
        wait_for(server_up, timeout=10, what="server in the namespace")

        agent = self.start_agent("--cluster-cidr", "169.254.77.0/30")
        self.run_in([sys.executable, "-c", CLIENT, NS_IP, str(port), "200"], client_cg)

        for cgroup, direction in ((client_cg, "client"), (server_cg, "server")):
            recs = agent.wait_records(lambda r, c=cgroup: r["type"] == "http" and r["workload"]["cgroup_id"] == c.id,
                                      200, what=f"{direction} records over veth")
            self.assertEqual([r["http"]["path"] for r in recs], [f"/users/{i}" for i in range(200)])
            self.assertTrue(all(r["http"]["status"] == 200 for r in recs))
            self.assertTrue(all(r["credential"]["scheme"] == "cookie" for r in recs))
            self.assertTrue(all(r["direction"] == direction for r in recs))
        client_rec = [r for r in agent.records() if r["workload"]["cgroup_id"] == client_cg.id][0]
        self.assertEqual(client_rec["local"]["ip"], HOST_IP)
        self.assertEqual(client_rec["remote"]["ip"], NS_IP)
        self.assertEqual(client_rec["remote"]["port"], port)
        # The server in the namespace is a workload on this node too: found by its socket.
        self.assertEqual(client_rec["peer"]["workload"]["cgroup_id"], server_cg.id)
        self.assertEqual(client_rec["peer"]["scope"], "node")
        # A caller outside the monitored tree is no known workload: only the CIDR says where it is.
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{NS_IP}:{port}/users/outsider"], check=True)
        outsider = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == server_cg.id
                                      and r["http"]["path"] == "/users/outsider", 1, what="the outsider's record")[0]
        self.assertEqual(outsider["peer"], {"scope": "cluster"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
