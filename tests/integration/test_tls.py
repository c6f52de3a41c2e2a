"""TLS end to end: ClientHello and certificates on the wire, and HTTPS read in plaintext through the
OpenSSL uprobes, with real nginx, curl and Python against certificates the test makes."""
import hashlib
import hmac
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import IntegrationTest, connection_records, free_port, http_records, wait_for  # noqa: E402

HOST = "api.apiwarden.test"

# Python's ssl module (SSL_write_ex/SSL_read_ex): n keep-alive requests, the first one with a 6 KiB
# header block, each with its own bearer token.
PYTHON_CLIENT = r"""
import http.client, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
for i in range(n):
    headers = {"Host": "api.apiwarden.test", "Authorization": f"Bearer tls-token-{i:04d}"}
    if i == 0:
        headers["X-Padding"] = "p" * 6144
    conn.request("GET", f"/api/orders/{i}?page={i % 3}", headers=headers)
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
conn.close()
"""


def cert_fingerprint(pem):
    out = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


class TlsTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.server = self.root.child("server")
        self.client = self.root.child("client")
        self.port = free_port()

    def curl(self, *args):
        return self.run_in(["curl", "-sS", "-k", "--resolve", f"{HOST}:{self.port}:127.0.0.1", *args], self.client)

    def fingerprint_key(self):
        with open(os.path.join(self.workdir, "state", "credential.key"), "rb") as f:
            return f.read().rstrip(b"\n")

    def test_curl_https_is_read_in_plaintext_on_both_sides(self):
        cert, key = self.make_cert(HOST)
        self.start_nginx(self.server, self.port, tls=(cert, key))
        agent = self.start_agent()
        # One connection, three requests (curl reuses it), one of them 404.
        self.curl("-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-H", "Authorization: Bearer curl-secret-1",
                  f"https://{HOST}:{self.port}/api/a", f"https://{HOST}:{self.port}/missing",
                  f"https://{HOST}:{self.port}/api/c?x=1")
        want = [("/api/a", 200), ("/missing", 404), ("/api/c?x=1", 200)]
        agent.wait_records(lambda r: r["type"] == "connection", 2, what="connection records")
        key = self.fingerprint_key()
        for cgroup, direction in ((self.client, "client"), (self.server, "server")):
            recs = agent.wait_records(lambda r, c=cgroup, d=direction: r in http_records([r], c, d), 3,
                                      what=f"{direction} https records")
            self.assertEqual([(r["http"]["path"], r["http"]["status"]) for r in recs], want, direction)
            for rec in recs:
                self.assertEqual(rec["http"]["method"], "GET")
                self.assertEqual(rec["http"]["host"], f"{HOST}:{self.port}")
                self.assertEqual(rec["http"]["version"], "1.1")
                self.assertGreater(rec["http"]["response_bytes"], 0)
                self.assertEqual(rec["tls"]["intercepted"], True)
                self.assertEqual(rec["tls"]["sni"], HOST)
                self.assertEqual(rec["credential"]["scheme"], "bearer")
                self.assertEqual(rec["credential"]["fingerprint"],
                                 hmac.new(key, b"curl-secret-1", hashlib.sha256).hexdigest()[:32])
            conns = connection_records(agent.records(), cgroup, direction)
            self.assertEqual(len(conns), 1, direction)
            self.assertEqual(conns[0]["http_requests"], 3)
            self.assertEqual(conns[0]["tls"]["intercepted"], True)
        # Metrics follow the pipeline once a second.
        def updated():
            text = agent.metrics()
            return text if 'apiwarden_records_written_total{type="http"} 6' in text else None
        text = wait_for(updated, timeout=5, what="metrics of the 6 http records")
        self.assertIn('apiwarden_capture_lost_total{reason="tls_plaintext"} 0', text)
        self.assertRegex(text, r"apiwarden_tls_libraries_probed [1-9]")
        agent.stop()
        self.assertNotIn("curl-secret-1", open(agent.records_path).read() + agent.log_text())

    def test_python_keepalive_https_gives_one_record_per_request(self):
        cert, key = self.make_cert(HOST)
        self.start_nginx(self.server, self.port, tls=(cert, key))
        agent = self.start_agent()
        n = 200
        self.run_in([sys.executable, "-c", PYTHON_CLIENT, str(self.port), str(n)], self.client)
        key = self.fingerprint_key()
        for cgroup, direction in ((self.client, "client"), (self.server, "server")):
            recs = agent.wait_records(lambda r, c=cgroup, d=direction: r in http_records([r], c, d), n,
                                      what=f"{direction} https records")
            self.assertEqual(len(recs), n)
            self.assertEqual([r["http"]["path"] for r in recs], [f"/api/orders/{i}?page={i % 3}" for i in range(n)])
            self.assertTrue(all(r["http"]["status"] == 200 and r["tls"]["intercepted"] for r in recs))
            self.assertEqual([r["credential"]["fingerprint"] for r in recs],
                             [hmac.new(key, f"tls-token-{i:04d}".encode(), hashlib.sha256).hexdigest()[:32]
                              for i in range(n)])
            self.assertGreater(recs[0]["http"]["request_bytes"], 6144)

    def test_without_plaintext_probes_only_the_handshake_is_seen(self):
        cert, key = self.make_cert(HOST)
        self.start_nginx(self.server, self.port, tls=(cert, key))
        agent = self.start_agent("--no-tls-plaintext")
        self.curl("-o", "/dev/null", f"https://{HOST}:{self.port}/index.html")
        for cgroup in (self.client, self.server):
            rec = agent.wait_records(
                lambda r: r["type"] == "connection" and r["workload"]["cgroup_id"] == cgroup.id, 1,
                what="tls connection record")[0]
            self.assertEqual(rec["tls"]["sni"], HOST)
            self.assertEqual(rec["tls"]["version"], "TLS1.3")
            self.assertNotIn("intercepted", rec["tls"])
        # Encrypted bytes are never parsed as HTTP.
        self.assertEqual([r for r in agent.records() if r["type"] == "http"], [])

    def test_tls12_certificates_and_mutual_tls_credential(self):
        cert, key = self.make_cert(HOST)
        client_cert, client_key = self.make_cert("billing.client", stem="client")
        self.start_nginx(self.server, self.port, tls=(cert, key),
                         tls_directives="ssl_protocols TLSv1.2; ssl_verify_client optional_no_ca;")
        agent = self.start_agent()
        self.curl("-o", "/dev/null", "--tls-max", "1.2", "--cert", client_cert, "--key", client_key,
                  f"https://{HOST}:{self.port}/index.html")
        for cgroup in (self.client, self.server):
            tls = agent.wait_records(lambda r: r["type"] == "connection" and r["workload"]["cgroup_id"] == cgroup.id,
                                     1, what="tls connection record")[0]["tls"]
            self.assertEqual(tls["version"], "TLS1.2")
            self.assertEqual(tls["server_cert"]["subject"], f"CN={HOST}")
            self.assertEqual(tls["server_cert"]["issuer"], f"CN={HOST}")
            self.assertEqual(tls["server_cert"]["sans"], [f"DNS:{HOST}"])
            self.assertEqual(tls["server_cert"]["sha256"], cert_fingerprint(cert))
            self.assertRegex(tls["server_cert"]["not_after"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertEqual(tls["client_cert"]["subject"], "CN=billing.client")
            self.assertEqual(tls["client_cert"]["sha256"], cert_fingerprint(client_cert))
        # The request carried no header credential: the client certificate is its credential.
        want = hmac.new(self.fingerprint_key(), cert_fingerprint(client_cert).encode(), hashlib.sha256).hexdigest()[:32]
        for cgroup, direction in ((self.client, "client"), (self.server, "server")):
            rec = http_records(agent.records(), cgroup, direction)
            self.assertEqual(len(rec), 1, direction)
            self.assertEqual(rec[0]["http"]["path"], "/index.html")
            self.assertEqual(rec[0]["credential"],
                             {"scheme": "mtls", "fingerprint": want, "source": "tls:client_certificate"})


if __name__ == "__main__":
    unittest.main()
