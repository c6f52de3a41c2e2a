"""Enforcement end to end: the real agent with --enforce, apiwardenctl over its control socket,
nginx serving two sibling client workloads (Python http.client loops, tests/integration/
enforce_client.py). Pins live under a bpffs directory of the test's own, removed at the end."""
import json
import os
import random
import shutil
import signal
import subprocess
import time
import unittest

from harness import CTL, IntegrationTest, apiwardenctl, free_port, wait_for

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "enforce_client.py")


class EnforceTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.pins = f"/sys/fs/bpf/apiwarden-it-{os.getpid()}-{IntegrationTest._counter}"
        self.socket = os.path.join(self.workdir, "control.sock")
        self.alerts_path = os.path.join(self.workdir, "alerts.jsonl")
        self.addCleanup(lambda: shutil.rmtree(self.pins, ignore_errors=True))  # runs after the agent stops
        self.api = self.root.child("api")
        self.a = self.root.child("a")
        self.b = self.root.child("b")
        self.port = free_port()
        self.start_nginx(self.api, self.port)

    def start(self, mode="enforce", *extra):
        agent = self.start_agent("--enforce", mode, "--enforce-pin-dir", self.pins, "--control-socket", self.socket,
                                 "--alerts", self.alerts_path, "--learning-period", "3600", *extra)
        wait_for(lambda: "control socket" in agent.log_text() or agent.proc.poll() is not None, timeout=20,
                 what="the control socket")
        if agent.proc.poll() is not None:
            raise AssertionError(f"agent exited:\n{agent.log_text()}")
        return agent

    def ctl(self, *args, check=True):
        code, answer = apiwardenctl(self.socket, *args)
        if check and code != 0:
            raise AssertionError(f"apiwardenctl {' '.join(args)} failed ({code}): {answer}")
        return answer

    def client(self, cgroup, *args):
        return self.spawn(["python3", CLIENT, "--port", str(self.port), *args], cgroup, stdout=subprocess.PIPE)

    @staticmethod
    def finish(proc):
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        return json.loads(out)

    def alerts(self):
        if not os.path.exists(self.alerts_path):
            return []
        with open(self.alerts_path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def cgroup_name(self, cgroup):
        return "cgroup:" + cgroup.path[len(os.path.dirname(self.root.path)):]

    def pinned(self):
        return sorted(os.listdir(os.path.join(self.pins, "maps")) + os.listdir(os.path.join(self.pins, "links")))

    def attached(self):
        out = subprocess.run(["bpftool", "cgroup", "show", self.root.path], capture_output=True, text=True).stdout
        return len([line for line in out.splitlines() if "apiwarden_enfor" in line])


class CutTest(EnforceTest):
    def test_cut_one_sibling_the_other_keeps_working(self):
        self.start()
        a = self.client(self.a)
        b = self.client(self.b)
        time.sleep(1.0)
        answer = self.ctl("cut", self.cgroup_name(self.a), "--reason", "incident 42", "--by", "alice")
        self.assertTrue(answer["ok"], answer)
        rule = answer["rule"]
        self.assertEqual((rule["action"], rule["mode"], rule["direction"]), ("cut", "enforce", "egress"))
        cut_at = time.time()
        time.sleep(1.5)
        # A new connect from a is refused at once with EPERM.
        probe = self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "1"], self.a)
        self.assertEqual(json.loads(probe)["errors"], {"EPERM": 1})
        restored = self.ctl("restore", rule["id"], "--by", "bob")
        self.assertTrue(restored["ok"], restored)
        time.sleep(1.0)
        ra, rb = self.finish(a), self.finish(b)

        self.assertGreater(ra["ok"], 50)
        self.assertIsNotNone(ra["first_failure"])
        self.assertLess(ra["first_failure"] - cut_at, 0.5, "the keep-alive connection was torn down at once")
        self.assertIn("EPERM", ra["errors"], ra)
        self.assertTrue(set(ra["errors"]) <= {"EPERM", "ECONNABORTED", "ECONNRESET", "RemoteDisconnected",
                                              "BrokenPipeError", "ConnectionAbortedError"}, ra)
        self.assertGreater(ra["last_ok"], ra["last_failure"], "restore gave access back")
        self.assertEqual(rb["failed"], 0, rb)
        self.assertGreater(rb["ok"], 100)

        audit = [r for r in self.alerts() if r.get("type") == "audit"]
        self.assertEqual([(r["event"], r["rule"]["id"]) for r in audit], [("cut", rule["id"]), ("restore", rule["id"])])
        self.assertTrue(audit[0]["actor"].startswith("alice (root (uid 0"), audit[0]["actor"])
        self.assertEqual(audit[0]["rule"]["reason"], "incident 42")
        self.assertTrue(audit[1]["actor"].startswith("bob"), audit[1])
        blocked = [r for r in self.alerts() if r.get("detector") == "enforcement_blocked"]
        self.assertTrue(blocked and blocked[0]["evidence"]["rule"] == rule["id"], self.alerts())
        self.assertEqual(self.ctl("list")["rules"], [])
        metrics = self.agent.metrics()
        self.assertRegex(metrics, r'apiwarden_enforcement_refused_total\{kind="connect",mode="enforce"\} [1-9]')
        self.assertRegex(metrics, r'apiwarden_enforcement_refused_total\{kind="abort",mode="enforce"\} [1-9]')

    def test_ttl_expiry_restores_access_by_itself(self):
        self.start()
        rule = self.ctl("cut", self.cgroup_name(self.a), "--ttl", "2s")["rule"]
        self.assertIsNotNone(rule["expires"])
        a = self.client(self.a, "--new-connection")
        time.sleep(1.0)
        self.assertGreater(self.finish(a)["failed"], 0)
        wait_for(lambda: any(r.get("event") == "expired" for r in self.alerts()), timeout=5, what="expired audit")
        result = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "5"], self.a))
        self.assertEqual(result["ok"], 5, result)
        self.assertEqual(self.ctl("list")["rules"], [])

    def test_dry_run_drops_nothing_and_counts_what_it_would_refuse(self):
        self.start()
        rule = self.ctl("cut", self.cgroup_name(self.a), "--dry-run")["rule"]
        self.assertEqual(rule["mode"], "monitor")
        result = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "40",
                                          "--new-connection", "--interval", "0"], self.a))
        self.assertEqual((result["ok"], result["failed"]), (40, 0))
        listed = self.ctl("list")["rules"]
        self.assertEqual(listed[0]["counters"]["connects"], 40, listed)
        self.assertEqual(listed[0]["counters"]["packets"], 0 + listed[0]["counters"]["packets"])
        wait_for(lambda: any(r.get("detector") == "enforcement_would_block" for r in self.alerts()), timeout=5,
                 what="would-block alert")

    def test_clear_errors(self):
        self.start()
        cases = [
            (["cut", "pod:default/nope"], "unknown workload"),
            (["cut", "cgroup:/no/such/cgroup"], "no such cgroup"),
            (["cut", self.cgroup_name(self.a), "--to", "10.0.0.0/33"], "prefix length"),
            (["revoke", "not-a-fingerprint"], "malformed fingerprint"),
            (["revoke", "0" * 32], "has not been seen"),
            (["restore", "r999"], "unknown rule id"),
        ]
        for args, message in cases:
            answer = self.ctl(*args, check=False)
            self.assertFalse(answer["ok"], args)
            self.assertIn(message, answer["error"], args)
        self.ctl("cut", self.cgroup_name(self.a))
        answer = self.ctl("cut", self.cgroup_name(self.a), check=False)
        self.assertIn("conflicting rule", answer["error"])
        # The socket is root's: another user is refused by the agent.
        p = subprocess.run([CTL, "--socket", self.socket, "status"], capture_output=True, text=True,
                           user=65534, group=65534)
        self.assertNotEqual(p.returncode, 0)


class CredentialTest(EnforceTest):
    def fingerprint(self, cgroup, token):
        self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "1", "--token", token], cgroup)
        records = self.agent.wait_records(
            lambda r: r["type"] == "http" and r["direction"] == "client" and r["workload"]["cgroup_id"] == cgroup.id
            and r.get("credential", {}).get("scheme") == "bearer", 1, what="a record with the token")
        return records[-1]["credential"]["fingerprint"]

    def run_count(self, cgroup, token, count=10):
        return json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", str(count),
                                       "--token", token, "--interval", "0"], cgroup))

    def test_revoke_refuses_the_token_everywhere_and_nothing_else(self):
        self.start()
        stolen = self.fingerprint(self.a, "tok-shared-0001")
        answer = self.ctl("revoke", stolen, "--reason", "leaked in a CI log")
        self.assertTrue(answer["ok"], answer)
        ra, rb = self.run_count(self.a, "tok-shared-0001"), self.run_count(self.b, "tok-shared-0001")
        other = self.run_count(self.a, "tok-a-own-0002")
        self.assertEqual((ra["ok"], ra["failed"]), (0, 10), ra)
        self.assertEqual((rb["ok"], rb["failed"]), (0, 10), rb)
        self.assertEqual(set(ra["errors"]), {"EACCES"}, ra)
        self.assertEqual((other["ok"], other["failed"]), (10, 0), other)
        listed = self.ctl("list")["rules"]
        self.assertEqual(listed[0]["counters"]["requests"], 20, listed)

    def test_revoked_token_from_off_node_never_reaches_the_server(self):
        # The client runs outside the enforced subtree (like a caller on another node): the
        # server's side drops the request before nginx reads it and resets the connection.
        self.start()
        fingerprint = self.fingerprint(self.a, "tok-remote-0006")
        self.ctl("revoke", fingerprint)

        def outside(token, path):
            p = subprocess.run(["python3", CLIENT, "--port", str(self.port), "--count", "3", "--token", token,
                                "--path", path, "--interval", "0"], capture_output=True, text=True, timeout=60)
            return json.loads(p.stdout)
        refused, other = outside("tok-remote-0006", "/api/refused"), outside("tok-fine-0007", "/api/fine")
        self.assertEqual((refused["ok"], refused["failed"]), (0, 3), refused)
        self.assertEqual((other["ok"], other["failed"]), (3, 0), other)
        self.agent.wait_records(lambda r: r["type"] == "http" and r["direction"] == "server"
                                and r["http"]["path"] == "/api/fine", 3, what="served requests")
        # Capture still records the attempts (its program sees the segment); nginx never answered.
        attempts = [r["http"] for r in self.agent.records() if r["type"] == "http" and r["direction"] == "server"
                    and r["http"]["path"] == "/api/refused"]
        self.assertEqual(len(attempts), 3, attempts)
        self.assertEqual([h.get("status") for h in attempts], [None] * 3, "nginx never read them")
        self.assertEqual(self.ctl("list")["rules"][0]["counters"]["requests"], 3)

    def test_bind_keeps_the_owner_working_and_refuses_the_thief(self):
        self.start()
        fingerprint = self.fingerprint(self.a, "tok-billing-0003")
        self.assertTrue(self.ctl("bind", fingerprint, self.cgroup_name(self.a))["ok"])
        owner, thief = self.run_count(self.a, "tok-billing-0003"), self.run_count(self.b, "tok-billing-0003")
        self.assertEqual((owner["ok"], owner["failed"]), (10, 0), owner)
        self.assertEqual((thief["ok"], thief["failed"]), (0, 10), thief)
        wait_for(lambda: [r for r in self.alerts() if r.get("detector") == "enforcement_blocked"
                          and r["evidence"]["total"]["requests"] == 10], timeout=5, what="the thief's alert")

    def test_monitor_mode_counts_exactly_what_enforce_would_refuse(self):
        self.start("monitor")
        fingerprint = self.fingerprint(self.a, "tok-watch-0004")
        rule = self.ctl("revoke", fingerprint)["rule"]
        self.assertEqual(rule["mode"], "monitor")
        watched, other = self.run_count(self.b, "tok-watch-0004", 25), self.run_count(self.b, "tok-other-0005", 5)
        self.assertEqual((watched["ok"], other["ok"]), (25, 5))
        self.assertEqual(self.ctl("list")["rules"][0]["counters"]["requests"], 25)

    def test_rules_of_an_earlier_kernel_hash_wait_for_their_credential(self):
        # An earlier agent hashed tokens another way (its pinned config says hash version 1): its
        # entry matches nothing now and the token itself was never kept. The rule stays, listed as
        # waiting, and is enforced again once the agent has seen a request carrying the credential.
        self.start()
        stolen = self.fingerprint(self.a, "tok-shared-0001")
        self.ctl("revoke", stolen, "--permanent", "--reason", "before the upgrade")
        self.assertEqual(self.agent.stop(), 0)
        config = os.path.join(self.pins, "maps", "apiwarden_enforce_config")
        key = ["0", "0", "0", "0"]
        value = json.loads(subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", config, "key", *key],
                                          capture_output=True, text=True, check=True).stdout)["value"]
        value[36:40] = ["1", "0", "0", "0"]  # hash_version (abi.h: apiwarden_enforce_config)
        subprocess.run(["bpftool", "map", "update", "pinned", config, "key", *key, "value", *value], check=True)
        self.start()
        self.assertIn("waits for a request carrying the credential", self.agent.log_text())
        self.assertIn("waiting", self.ctl("list")["rules"][0])
        first = self.run_count(self.b, "tok-shared-0001", 1)
        self.assertEqual(first["ok"], 1, "it passes: the agent learns the token's new hash from it")
        wait_for(lambda: "waiting" not in self.ctl("list")["rules"][0], what="the rule enforced again")
        again, other = self.run_count(self.b, "tok-shared-0001", 5), self.run_count(self.b, "tok-other-0005", 5)
        self.assertEqual((again["ok"], again["failed"]), (0, 5), again)
        self.assertEqual((other["ok"], other["failed"]), (5, 0), other)


class AutoResponseTest(EnforceTest):
    def test_shared_credential_alert_revokes_the_token(self):
        config = os.path.join(self.workdir, "responses.yaml")
        with open(config, "w") as f:
            f.write("responses:\n  - detector: shared_credential\n    min_severity: high\n"
                    "    action: revoke\n    ttl: 10m\n")
        self.start("enforce", "--enforce-config", config)
        first = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "3",
                                        "--token", "tok-stolen-0008"], self.a))
        self.assertEqual(first["ok"], 3)
        self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "1", "--token", "tok-stolen-0008"],
                    self.b)
        wait_for(lambda: any(r.get("type") == "audit" and r["event"] == "revoke" for r in self.alerts()),
                 timeout=10, what="the auto-response's audit record")
        audit = [r for r in self.alerts() if r.get("type") == "audit"][0]
        self.assertEqual(audit["actor"], "apiwarden-agent (auto-response)")
        self.assertTrue(audit["rule"]["reason"].startswith("auto-response to shared_credential"), audit)
        after = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "3",
                                        "--token", "tok-stolen-0008", "--interval", "0"], self.a))
        self.assertEqual((after["ok"], after["failed"]), (0, 3), after)

    def test_malformed_policy_is_refused_at_start(self):
        config = os.path.join(self.workdir, "responses.yaml")
        with open(config, "w") as f:
            f.write("responses:\n  - detector: no_such_detector\n    action: cut\n")
        with self.assertRaises(AssertionError) as failed:
            self.start("enforce", "--enforce-config", config)
        self.assertIn("unknown detector", str(failed.exception))


class RestartTest(EnforceTest):
    def test_corrupt_state_is_set_aside_and_the_pinned_rules_adopted(self):
        # r2 spans two cgroups (one systemd unit name under two parents): both stay in one adopted rule.
        units = [self.a.child("job.service"), self.b.child("job.service")]
        self.start()
        self.ctl("cut", self.cgroup_name(self.a), "--permanent", "--reason", "kept in the kernel")
        self.assertEqual(len(self.ctl("cut", "unit:job.service", "--permanent")["rule"]["cgroups"]), 2)
        self.assertEqual(self.agent.stop(), 0)
        state = os.path.join(self.workdir, "state", "enforcement.json")
        with open(state, "w") as f:
            f.write('{"kind": "apiwarden.enforcement", "version": 1, "rules": [{"slot": "x"')
        probe = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "1"], self.a))
        self.assertEqual(probe["errors"], {"EPERM": 1}, "the stopped agent's rule still holds")
        self.start()
        self.assertIn("rejected", self.agent.log_text())
        aside = [n for n in os.listdir(os.path.dirname(state)) if n.startswith("enforcement.json.rejected-")]
        self.assertEqual(len(aside), 1)
        rules = self.ctl("list")["rules"]
        self.assertEqual([(r["id"], r["action"], r["reason"]) for r in rules],
                         [("r1", "cut", "found in the pinned maps without saved metadata"),
                          ("r2", "cut", "found in the pinned maps without saved metadata")])
        self.assertEqual(rules[0]["workload"], self.cgroup_name(self.a))
        self.assertEqual(sorted(rules[1]["cgroups"]), sorted(self.cgroup_name(u)[len("cgroup:"):] for u in units))
        for unit in units:
            probe = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "1"], unit))
            self.assertEqual(probe["errors"], {"EPERM": 1})
        self.ctl("restore", "r1")
        probe = json.loads(self.run_in(["python3", CLIENT, "--port", str(self.port), "--count", "1"], self.a))
        self.assertEqual(probe["ok"], 1)

    def test_kill_and_restart_twenty_times(self):
        self.start()
        self.ctl("cut", self.cgroup_name(self.a), "--permanent", "--reason", "restart test")
        blocked = self.client(self.a, "--new-connection", "--interval", "0.002")
        allowed = self.client(self.b, "--interval", "0.002")
        pinned, attached = self.pinned(), self.attached()
        self.assertEqual(attached, 5)
        rng = random.Random(5)
        for cycle in range(20):
            time.sleep(rng.uniform(0.0, 0.4))
            self.agent.proc.send_signal(signal.SIGKILL)
            self.agent.proc.wait()
            self.agent.log.close()
            time.sleep(rng.uniform(0.0, 0.2))
            self.start()
            self.assertEqual(self.pinned(), pinned, f"cycle {cycle}")
            self.assertEqual(self.attached(), attached, f"cycle {cycle}: no double attach")
        time.sleep(0.5)
        rules = self.ctl("list")["rules"]
        self.assertEqual([r["reason"] for r in rules], ["restart test"])
        rb, ra = self.finish(allowed), self.finish(blocked)
        self.assertEqual(ra["ok"], 0, ra)
        self.assertGreater(ra["failed"], 100)
        self.assertGreaterEqual(rb["ok"] / (rb["ok"] + rb["failed"]), 0.999, rb)


if __name__ == "__main__":
    unittest.main()
