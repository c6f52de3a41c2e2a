"""Capture end to end: real servers and clients in test cgroups, the real agent, exact records."""
import os
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import IntegrationTest, connection_records, free_port, http_records  # noqa: E402

KEEPALIVE_CLIENT = r"""
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    conn.request("GET", f"/api/items/{i}?page={i % 7}", headers={"Host": "api.test"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
conn.close()
"""

# Sends the request in pieces (TCP_NODELAY + pauses: several segments), reads to EOF, and prints
# the exact byte counts it sent and received.
RAW_CLIENT = r"""
import socket, sys, time
port, parts = int(sys.argv[1]), sys.argv[2:]
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sent = 0
for part in parts:
    data = bytes.fromhex(part)
    s.sendall(data); sent += len(data)
    time.sleep(0.05)
received = 0
while True:
    chunk = s.recv(65536)
    if not chunk: break
    received += len(chunk)
s.close()
print(sent, received)
"""

NODE_CLIENT = r"""
const port = process.argv[1];
(async () => {
  const r = await fetch(`http://127.0.0.1:${port}/created`, {method: "POST", body: "x".repeat(100),
                        headers: {"X-API-Key": process.argv[2]}});
  await r.text();
  if (r.status !== 201) process.exit(1);
})();
"""


class CaptureTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.server = self.root.child("server")
        self.client = self.root.child("client")
        self.port = free_port()

    def test_thousand_keepalive_requests_on_one_connection(self):
        self.start_nginx(self.server, self.port)
        agent = self.start_agent()
        self.run_in([sys.executable, "-c", KEEPALIVE_CLIENT, str(self.port), "1000"], self.client, timeout=120)

        is_client = lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.client.id
        is_server = lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.server.id
        client = agent.wait_records(is_client, 1000, what="client http records")
        server = agent.wait_records(is_server, 1000, what="server http records")
        self.assertEqual(len(client), 1000)
        self.assertEqual(len(server), 1000)
        for i, (c, s) in enumerate(zip(client, server)):
            expected = f"/api/items/{i}?page={i % 7}"
            for r, direction in ((c, "client"), (s, "server")):
                self.assertEqual(r["direction"], direction)
                self.assertEqual(r["http"]["method"], "GET")
                self.assertEqual(r["http"]["path"], expected)
                self.assertEqual(r["http"]["host"], "api.test")
                self.assertEqual(r["http"]["status"], 200)
                self.assertEqual(r["http"]["version"], "1.1")
                self.assertEqual(r["credential"]["scheme"], "none")
            self.assertEqual(c["remote"]["port"], self.port)
            self.assertEqual(s["local"]["port"], self.port)
            self.assertEqual(c["local"]["port"], s["remote"]["port"])
        self.assertEqual(client[0]["workload"]["cgroup_path"], self.client.rel)
        self.assertEqual(server[0]["workload"]["cgroup_path"], self.server.rel)
        # Both ends are workloads on this node: each record names the other.
        self.assertEqual(client[0]["peer"]["scope"], "node")
        self.assertEqual(client[0]["peer"]["workload"]["cgroup_path"], self.server.rel)
        self.assertEqual(server[0]["peer"]["workload"]["cgroup_path"], self.client.rel)
        # One connection carried them all.
        self.assertEqual(len({r["local"]["port"] for r in client}), 1)
        conn = agent.wait_records(lambda r: r["type"] == "connection" and r["workload"]["cgroup_id"] == self.client.id,
                                  1, what="client connection record")[0]
        self.assertEqual(conn["http_requests"], 1000)

    def test_header_block_over_6k_in_several_segments(self):
        self.start_nginx(self.server, self.port)
        agent = self.start_agent()
        token = "eyJhbGciOiJIUzI1NiJ9." + "A" * 6300 + ".sig"
        request = (f"GET /api/big?x=1 HTTP/1.1\r\nHost: big.test\r\nAuthorization: Bearer {token}\r\n"
                   "User-Agent: raw\r\nConnection: close\r\n\r\n").encode()
        self.assertGreater(len(request), 6144)
        thirds = [request[:2000], request[2000:4500], request[4500:]]
        self.run_in([sys.executable, "-c", RAW_CLIENT, str(self.port), *[p.hex() for p in thirds]], self.client)

        for cgroup, direction in ((self.client, "client"), (self.server, "server")):
            rec = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == cgroup.id,
                                     1, what=f"{direction} record")[0]
            self.assertEqual(rec["http"]["path"], "/api/big?x=1")
            self.assertEqual(rec["http"]["host"], "big.test")
            self.assertEqual(rec["http"]["status"], 200)
            self.assertEqual(rec["http"]["request_bytes"], len(request))
            self.assertEqual(rec["credential"]["scheme"], "bearer")
        agent.stop()
        with open(agent.records_path) as f:
            self.assertNotIn("AAAAAAAA", f.read())
        self.assertNotIn("AAAAAAAA", agent.log_text())

    def test_pipelined_requests_pair_in_order(self):
        self.start_nginx(self.server, self.port)
        agent = self.start_agent()
        pipeline = (b"GET /api/one HTTP/1.1\r\nHost: p\r\n\r\n"
                    b"GET /missing HTTP/1.1\r\nHost: p\r\n\r\n"
                    b"POST /created HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        self.run_in([sys.executable, "-c", RAW_CLIENT, str(self.port), pipeline.hex()], self.client)
        recs = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.client.id,
                                  3, what="pipelined records")
        self.assertEqual([(r["http"]["method"], r["http"]["path"], r["http"]["status"]) for r in recs],
                         [("GET", "/api/one", 200), ("GET", "/missing", 404), ("POST", "/created", 201)])

    def test_connection_bytes_equal_what_the_client_sent_and_received(self):
        self.start_nginx(self.server, self.port)
        agent = self.start_agent()
        request = b"GET /index.html HTTP/1.1\r\nHost: bytes.test\r\nConnection: close\r\n\r\n"
        out = self.run_in([sys.executable, "-c", RAW_CLIENT, str(self.port), request.hex()], self.client)
        sent, received = map(int, out.split())
        self.assertEqual(sent, len(request))
        client = agent.wait_records(
            lambda r: r["type"] == "connection" and r["workload"]["cgroup_id"] == self.client.id, 1,
            what="client connection record")[0]
        server = agent.wait_records(
            lambda r: r["type"] == "connection" and r["workload"]["cgroup_id"] == self.server.id, 1,
            what="server connection record")[0]
        self.assertEqual(client["direction"], "client")
        self.assertEqual(server["direction"], "server")
        self.assertEqual((client["bytes_sent"], client["bytes_received"]), (sent, received))
        self.assertEqual((server["bytes_sent"], server["bytes_received"]), (received, sent))
        self.assertEqual(client["remote"]["port"], self.port)
        self.assertEqual(client["http_requests"], 1)
        self.assertGreater(client["duration_us"], 0)

    def test_ipv6_curl(self):
        port6 = free_port(socket.AF_INET6)
        self.start_nginx(self.server, self.port, ipv6_port=port6)
        agent = self.start_agent()
        self.run_in(["curl", "-sS", "-o", "/dev/null", "-g", f"http://[::1]:{port6}/index.html"], self.client)
        rec = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.client.id,
                                 1, what="ipv6 record")[0]
        self.assertEqual(rec["local"]["ip"], "::1")
        self.assertEqual(rec["remote"]["ip"], "::1")
        self.assertEqual(rec["remote"]["port"], port6)
        self.assertEqual(rec["http"]["path"], "/index.html")
        self.assertEqual(rec["http"]["status"], 200)
        self.assertEqual(rec["http"]["host"], f"[::1]:{port6}")

    def test_node_fetch_post_with_api_key(self):
        self.start_nginx(self.server, self.port)
        agent = self.start_agent()
        self.run_in(["node", "-e", NODE_CLIENT, str(self.port), "k3y-value-never-logged"], self.client)
        rec = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.client.id,
                                 1, what="node record")[0]
        self.assertEqual((rec["http"]["method"], rec["http"]["path"], rec["http"]["status"]), ("POST", "/created", 201))
        self.assertEqual(rec["credential"]["scheme"], "api_key")
        self.assertGreater(rec["http"]["request_bytes"], 100)
        agent.stop()
        with open(agent.records_path) as f:
            self.assertNotIn("k3y-value", f.read())

    def test_metrics_count_requests_by_workload_and_report_no_loss(self):
        self.start_nginx(self.server, self.port)
        agent = self.start_agent()
        self.run_in([sys.executable, "-c", KEEPALIVE_CLIENT, str(self.port), "50"], self.client)
        agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.client.id, 50)

        def counted():
            text = agent.metrics()
            line = (f'apiwarden_http_requests_total{{direction="client",method="GET",status_class="2xx",'
                    f'workload="{self.client.rel}"}} 50')
            return text if line in text else None
        from harness import wait_for
        text = wait_for(counted, timeout=5, what="request counter at 50")
        self.assertIn('apiwarden_capture_lost_total{reason="ringbuf_full"} 0', text)
        self.assertIn("apiwarden_flows_connections_tracked", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
