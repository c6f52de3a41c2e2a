"""Credential identity end to end: every carrier fingerprinted with the cluster key, and no byte
sequence of any secret anywhere the agent writes (records, trace-level log, metrics, state)."""
import base64
import glob
import hashlib
import hmac
import json
import os
import secrets
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import IntegrationTest, free_port  # noqa: E402

CARRIERS = ["bearer", "jwt", "basic", "x-api-key", "api-key", "x-auth-token",
            "query:api_key", "query:access_token", "query:token", "cookie"]

# Sends one request per secret over keep-alive connections; prints nothing.
CLIENT = r"""
import http.client, json, sys
port, plan = int(sys.argv[1]), json.load(open(sys.argv[2]))
conn = http.client.HTTPConnection("127.0.0.1", port)
for i, (path, headers) in enumerate(plan):
    if i % 100 == 0:
        conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse(); r.read()
conn.close()
"""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def request_for(carrier, secret, i):
    """(path, headers, the string the agent fingerprints, the strings that must never appear)."""
    path, headers = f"/api/items/{i}", {}
    if carrier == "bearer":
        headers["Authorization"] = f"Bearer {secret}"
        return path, headers, secret, [secret]
    if carrier == "jwt":
        token = ".".join([b64url(b'{"alg":"HS256","typ":"JWT"}'),
                          b64url(json.dumps({"sub": f"svc-{i}", "jti": f"id-{i}", "exp": 2000000000}).encode()),
                          secret])
        headers["Authorization"] = f"Bearer {token}"
        return path, headers, token, [secret]
    if carrier == "basic":
        encoded = base64.b64encode(f"user{i}:{secret}".encode()).decode()
        headers["Authorization"] = f"Basic {encoded}"
        return path, headers, encoded, [secret, encoded]
    if carrier.startswith("query:"):
        return f"{path}?page=1&{carrier[6:]}={secret}", headers, secret, [secret]
    if carrier == "cookie":
        headers["Cookie"] = f"theme=dark; sessionid={secret}"
        return path, headers, secret, [secret]
    headers[carrier] = secret
    return path, headers, secret, [secret]


class CredentialTest(IntegrationTest):
    def test_thousand_secrets_are_fingerprinted_and_never_written(self):
        server, client = self.root.child("server"), self.root.child("client")
        port = free_port()
        self.start_nginx(server, port)
        agent = self.start_agent("--log-level", "trace")

        plan, expected, forbidden = [], [], []
        for i in range(1000):
            carrier = CARRIERS[i % len(CARRIERS)]
            secret = secrets.token_urlsafe(18)
            path, headers, fingerprinted, never = request_for(carrier, secret, i)
            plan.append((path, headers))
            expected.append((carrier, fingerprinted))
            forbidden.extend(never)
        plan_path = os.path.join(self.workdir, "plan.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        self.run_in([sys.executable, "-c", CLIENT, str(port), plan_path], client, timeout=120)
        os.unlink(plan_path)  # the plan holds the secrets: it is not part of what the agent wrote

        recs = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == client.id,
                                  1000, what="client records")
        metrics = agent.metrics()
        agent.stop()

        with open(os.path.join(self.workdir, "state", "credential.key"), "rb") as f:
            key = f.read().rstrip(b"\n")
        for i, (rec, (carrier, fingerprinted)) in enumerate(zip(recs, expected)):
            want = hmac.new(key, fingerprinted.encode(), hashlib.sha256).hexdigest()[:32]
            self.assertEqual(rec["credential"]["fingerprint"], want, f"request {i} via {carrier}")
            scheme = {"bearer": "bearer", "jwt": "jwt", "basic": "basic", "cookie": "cookie"}.get(carrier, "api_key")
            self.assertEqual(rec["credential"]["scheme"], scheme, carrier)
            if carrier == "jwt":
                self.assertEqual(rec["credential"]["jwt"]["sub"], f"svc-{i}")
                self.assertEqual(rec["credential"]["jwt"]["exp"], 2000000000)
            if carrier == "basic":
                self.assertEqual(rec["credential"]["basic_user"], f"user{i}")
            if carrier.startswith("query:"):
                self.assertEqual(rec["http"]["path"], f"/api/items/{i}?page=1&{carrier[6:]}=REDACTED")

        def read(path):
            with open(path, errors="replace") as f:
                return f.read()
        written = {"records": read(agent.records_path), "log": agent.log_text(), "metrics": metrics}
        for path in glob.glob(os.path.join(self.workdir, "state", "**"), recursive=True):
            if os.path.isfile(path):
                written[path] = read(path)
        hits = []
        for secret in forbidden:
            for start in range(0, len(secret) - 7):
                piece = secret[start:start + 8]
                hits.extend(f"{name}: {piece}" for name, text in written.items() if piece in text)
        self.assertEqual(hits, [], f"{len(hits)} secret fragments found")
        self.assertGreater(len(written["log"]), 1000)  # trace logging really was on


if __name__ == "__main__":
    unittest.main(verbosity=2)
