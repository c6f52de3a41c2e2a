"""Detection end to end: real clients replaying credentials against nginx, the real agent's alerts."""
import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import IntegrationTest, free_port, wait_for  # noqa: E402

TOKEN = "billing-service-token-7f3a9c"

PYTHON_CLIENT = r"""
import sys, urllib.request
port, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/invoices/{i}", headers={"Authorization": token})
    urllib.request.urlopen(req).read()
"""


def b64url(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class DetectFixture(IntegrationTest):
    """An nginx API and two client cgroups; alerts to a file."""

    def setUp(self):
        super().setUp()
        self.api = self.root.child("api")
        self.billing = self.root.child("billing")
        self.reports = self.root.child("reports")
        self.port = free_port()
        self.alerts_path = os.path.join(self.workdir, "alerts.jsonl")

    def alerts(self):
        if not os.path.exists(self.alerts_path):
            return []
        with open(self.alerts_path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def fingerprint(self, secret):
        with open(os.path.join(self.workdir, "state", "credential.key"), "rb") as f:
            key = f.read().rstrip(b"\n")
        return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()[:32]


class DetectTest(DetectFixture):
    def test_a_token_replayed_by_a_second_workload_names_both(self):
        self.start_nginx(self.api, self.port)
        # A learning period longer than the test: only the credential detectors can speak.
        agent = self.start_agent("--alerts", self.alerts_path, "--learning-period", "600")
        url = f"http://127.0.0.1:{self.port}/api/invoices/1"
        for _ in range(3):
            self.run_in(["curl", "-sS", "-o", "/dev/null", "-H", f"Authorization: Bearer {TOKEN}", url], self.billing)
        agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == self.billing.id, 3)
        self.assertEqual(self.alerts(), [])

        replayed_at = time.monotonic()
        self.run_in([sys.executable, "-c", PYTHON_CLIENT, str(self.port), f"Bearer {TOKEN}", "5"], self.reports)
        shared = wait_for(lambda: [a for a in self.alerts() if a["detector"] == "shared_credential"] or None,
                          timeout=5, what="shared_credential alert")
        delay = time.monotonic() - replayed_at
        self.assertLess(delay, 5)
        # Metrics follow once a second.
        wait_for(lambda: re.search(r'apiwarden_alerts_total\{detector="shared_credential"\} [1-9]', agent.metrics()),
                 timeout=5, what="shared_credential alert counter above 0")
        agent.stop()

        self.assertEqual(len(shared), 1, shared)  # repeats are counted, not written
        alert = shared[0]
        self.assertEqual(alert["severity"], "high")
        self.assertEqual(alert["credential"], {"scheme": "bearer", "fingerprint": self.fingerprint(TOKEN)})
        names = sorted(p["identity"] for p in alert["evidence"]["presenters"])
        self.assertEqual(names, sorted([f"cgroup:{self.billing.rel}", f"cgroup:{self.reports.rel}"]))
        self.assertIn(f"cgroup:{self.billing.rel}", alert["summary"])
        self.assertIn(f"cgroup:{self.reports.rel}", alert["summary"])
        self.assertEqual(alert["workload"]["cgroup_path"], self.reports.rel)
        for key in ("ts", "first_seen", "last_seen", "dedupe_key", "count"):
            self.assertIn(key, alert)
        with open(self.alerts_path) as f:
            self.assertNotIn(TOKEN, f.read())
        self.assertEqual([a for a in self.alerts() if a["detector"] != "shared_credential"], [])

    def test_an_expired_jwt_that_gets_a_2xx_is_flagged(self):
        self.start_nginx(self.api, self.port)
        agent = self.start_agent("--alerts", self.alerts_path, "--learning-period", "0")
        now = int(time.time())
        jwt = ".".join([b64url({"alg": "RS256", "kid": "k1"}),
                        b64url({"iss": "https://idp.test", "sub": "billing", "iat": now - 7200, "exp": now - 3600}),
                        "c2lnbmF0dXJl"])
        self.run_in(["curl", "-sS", "-o", "/dev/null", "-H", f"Authorization: Bearer {jwt}",
                     f"http://127.0.0.1:{self.port}/api/x"], self.billing)
        stale = wait_for(lambda: [a for a in self.alerts() if a["detector"] == "stale_credential"] or None,
                         timeout=5, what="stale_credential alert")
        agent.stop()
        # The client's and the server's view of the call share the dedupe key: one alert.
        self.assertEqual(len(stale), 1, stale)
        alert = stale[0]
        self.assertIn(alert["workload"]["cgroup_path"], (self.billing.rel, self.api.rel))
        self.assertEqual(alert["severity"], "high")
        self.assertEqual(alert["evidence"]["reason"], "expired_accepted")
        self.assertEqual(alert["evidence"]["status"], 200)
        self.assertEqual(alert["evidence"]["claims"], {"iss": "https://idp.test", "sub": "billing", "kid": "k1",
                                                       "iat": now - 7200, "exp": now - 3600})
        self.assertEqual(alert["credential"], {"scheme": "jwt", "fingerprint": self.fingerprint(jwt)})


if __name__ == "__main__":
    unittest.main()


class BaselineTest(DetectFixture):
    def test_a_baseline_survives_a_restart_and_a_corrupt_one_is_set_aside(self):
        self.start_nginx(self.api, self.port)
        state = os.path.join(self.workdir, "state")
        os.makedirs(state, exist_ok=True)
        with open(os.path.join(state, "baseline.pb"), "wb") as f:
            f.write(b"\x0a\xff\xff not a baseline")
        agent = self.start_agent("--alerts", self.alerts_path, "--learning-period", "1")
        self.assertIn("rejected, learning afresh", agent.log_text())
        self.assertTrue([n for n in os.listdir(state) if n.startswith("baseline.pb.rejected-")])

        url = f"http://127.0.0.1:{self.port}/api/invoices/1"
        self.run_in(["curl", "-sS", "-o", "/dev/null", url], self.billing)
        agent.wait_records(lambda r: r["type"] == "http" and r["direction"] == "server", 1)
        time.sleep(1.2)  # past the learning period: billing's baseline is what it did so far
        self.assertEqual(agent.stop(), 0)
        self.assertTrue(os.path.exists(os.path.join(state, "baseline.pb")))

        agent = self.start_agent("--alerts", self.alerts_path, "--learning-period", "1")
        self.assertIn("baseline restored", agent.log_text())
        self.run_in(["curl", "-sS", "-o", "/dev/null", url, f"http://127.0.0.1:{self.port}/api/refunds"],
                    self.billing)
        new = wait_for(lambda: [a for a in self.alerts() if a["detector"] == "new_endpoint"] or None,
                       timeout=5, what="new_endpoint alert after the restart")
        self.assertEqual(len(new), 1, new)
        self.assertEqual(new[0]["evidence"]["route"], "/api/refunds")
        self.assertEqual(new[0]["identity"], f"cgroup:{self.billing.rel}")
