"""The detection scenario runner: scenarios.yaml, one agent, real nginx and Python clients in cgroups.

Prints, per scenario: detected or not, time to alert, and the false alerts of the benign part.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import IntegrationTest, free_port, wait_port  # noqa: E402


def b64url(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class ScenarioTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        with open(os.path.join(HERE, "scenarios.yaml")) as f:
            self.plan = yaml.safe_load(f)
        self.alerts_path = os.path.join(self.workdir, "alerts.jsonl")
        self.cgroups = {}
        self.ports = {"api": free_port(), "api2": free_port()}

    def cgroup(self, name):
        if name not in self.cgroups:
            self.cgroups[name] = self.root.child(name)
        return self.cgroups[name]

    def start_server(self, name):
        conf_dir = os.path.join(self.workdir, f"nginx-{name}")
        export = os.path.join(conf_dir, "www", "api", "export")
        os.makedirs(export)
        for i in range(1, 21):
            with open(os.path.join(export, str(i)), "w") as f:
                f.write("x" * 300)
        with open(os.path.join(export, "999"), "wb") as f:
            f.write(b"y" * (5 << 20))
        conf = f"""
daemon off; master_process off; worker_processes 1; pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {conf_dir}/body; proxy_temp_path {conf_dir}/proxy; fastcgi_temp_path {conf_dir}/fastcgi;
  uwsgi_temp_path {conf_dir}/uwsgi; scgi_temp_path {conf_dir}/scgi;
  server {{
    listen 127.0.0.1:{self.ports[name]};
    root {conf_dir}/www;
    location /api/export/ {{ }}
    location /api/fail {{ return 503; }}
    location /api/ {{ return 200 '{{"ok":true}}\\n'; }}
    location /login {{ return 401; }}
  }}
}}
"""
        path = os.path.join(conf_dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.spawn(["nginx", "-c", path, "-e", os.path.join(conf_dir, "error.log")], self.cgroup(name))
        wait_port(self.ports[name])

    def headers(self, token):
        if token == "none":
            return {}
        spec = self.plan["tokens"][token]
        if "bearer" in spec:
            return {"Authorization": "Bearer " + spec["bearer"]}
        if "api_key" in spec:
            return {"X-API-Key": spec["api_key"]}
        claims = spec["jwt"]
        now = int(time.time())
        jwt = ".".join([b64url({"alg": "RS256"}),
                        b64url({"sub": claims["sub"], "iat": now + claims["iat_offset_s"],
                                "exp": now + claims["exp_offset_s"]}), "c2ln"])
        return {"Authorization": "Bearer " + jwt}

    def client_spec(self, step, **extra):
        return json.dumps({"port": self.ports[step.get("server", "api")], "method": step["method"],
                           "paths": step["paths"], "headers": self.headers(step["token"]), **extra})

    def alerts(self):
        if not os.path.exists(self.alerts_path):
            return []
        with open(self.alerts_path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def test_every_scenario_is_detected_and_benign_traffic_raises_nothing(self):
        plan = self.plan
        self.start_server("api")
        self.start_server("api2")
        # The declared owner needs the deploy token's fingerprint, which needs the agent's key:
        # make the key first, then compute it.
        config = os.path.join(self.workdir, "detect.yaml")
        key = os.urandom(32).hex().encode()
        key_file = os.path.join(self.workdir, "credential.key")
        with open(key_file, "wb") as f:
            f.write(key)
        deploy = plan["tokens"]["deploy"]["bearer"]
        owner = f"cgroup:{self.root.rel}/deployer"
        with open(config, "w") as f:
            yaml.safe_dump({"credentials": [{"fingerprint": hmac.new(key, deploy.encode(), hashlib.sha256)
                                             .hexdigest()[:32], "owner": owner}]}, f)
        agent = self.start_agent("--alerts", self.alerts_path, "--learning-period", str(plan["learning_period_s"]),
                                 "--credential-key-file", key_file, "--detect-config", config)
        started = time.monotonic()
        benign_ids = set()
        for step in plan["benign"]:
            cg = self.cgroup(step["client"])
            benign_ids.add(cg.id)
            self.spawn([sys.executable, os.path.join(HERE, "client.py"), self.client_spec(step, rate=step["rate"])], cg)

        # Learning, then the benign requests that must raise nothing.
        time.sleep(plan["learning_period_s"] + 1)
        counted_from = len(agent.records())

        def benign_server_records():
            recs = agent.records()[counted_from:]
            return sum(1 for r in recs if r["type"] == "http" and r["direction"] == "server")
        deadline = time.monotonic() + 120
        while benign_server_records() < plan["benign_requests_after_learning"]:
            self.assertLess(time.monotonic(), deadline, "benign traffic too slow")
            time.sleep(1)
        benign_total = benign_server_records()
        false_alerts = self.alerts()
        print(f"\nbenign: learning {plan['learning_period_s']} s, then {benign_total} requests: "
              f"{len(false_alerts)} alerts", flush=True)
        self.assertEqual(false_alerts, [], "alerts during benign traffic")

        results = []
        for scenario in plan["scenarios"]:
            before = len(self.alerts())
            t0 = time.monotonic()
            for step in scenario["steps"]:
                self.run_in([sys.executable, os.path.join(HERE, "client.py"),
                             self.client_spec(step, count=step["count"])], self.cgroup(step["client"]))
            detected_at = None
            while time.monotonic() < t0 + plan["deadline_s"] + 1:
                new = self.alerts()[before:]
                if any(a["detector"] == scenario["expect"] for a in new) and detected_at is None:
                    detected_at = time.monotonic() - t0
                    time.sleep(0.5)  # let any companion alert arrive before judging
                    break
                time.sleep(0.05)
            new = self.alerts()[before:]
            unexpected = sorted({a["detector"] for a in new} - {scenario["expect"], *scenario.get("also", [])})
            results.append((scenario["name"], scenario["expect"], detected_at, unexpected))
            print(f"  {scenario['name']:48} {scenario['expect']:26} "
                  f"{'detected in %.2f s' % detected_at if detected_at is not None else 'NOT DETECTED':20}"
                  f"{' unexpected: ' + ', '.join(unexpected) if unexpected else ''}", flush=True)
        print(f"run took {time.monotonic() - started:.0f} s", flush=True)
        for name, expect, detected_at, unexpected in results:
            self.assertIsNotNone(detected_at, f"{name}: no {expect} alert")
            self.assertLessEqual(detected_at, plan["deadline_s"], f"{name}: {expect} took {detected_at:.2f} s")
            self.assertEqual(unexpected, [], f"{name}: unexpected alerts")


if __name__ == "__main__":
    unittest.main()
