"""Start-up and shutdown: clear errors for bad environments and flags, clean detach on SIGTERM."""
import json
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import AGENT, IntegrationTest  # noqa: E402


def attached_programs(cgroup_path):
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup_path], capture_output=True, text=True)
    return json.loads(out.stdout.strip() or "[]")  # bpftool prints a bare newline for none


class StartupTest(IntegrationTest):
    def agent_fails(self, argv, user=None):
        cmd = ([*(["runuser", "-u", user, "--"] if user else []), AGENT, *argv])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        return proc.stderr

    def test_unprivileged_user_gets_a_clear_message(self):
        err = self.agent_fails(["--cgroup-root", self.root.path], user="nobody")
        self.assertIn("needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON", err)

    def test_cgroup_root_outside_the_hierarchy_is_refused(self):
        err = self.agent_fails(["--cgroup-root", "/tmp"])
        self.assertIn("is not inside the cgroup v2 hierarchy", err)
        err = self.agent_fails(["--cgroup-root", self.root.path + "/missing"])
        self.assertIn("No such file or directory", err)

    def test_unwritable_records_path_is_refused(self):
        err = self.agent_fails(["--cgroup-root", self.root.path, "--records", "/nonexistent/records.jsonl"])
        self.assertIn("opening --records: opening /nonexistent/records.jsonl: No such file or directory", err)

    def test_bad_flag_values_are_refused_before_loading(self):
        proc = subprocess.run([AGENT, "--ringbuf-mib", "3"], capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("power of two", proc.stderr)

    def test_sigterm_detaches_every_program(self):
        agent = self.start_agent()
        self.assertEqual(sorted(p["attach_type"] for p in attached_programs(self.root.path)),
                         ["cgroup_inet_egress", "cgroup_inet_ingress", "cgroup_sock_ops"])
        self.assertEqual(agent.stop(), 0)
        self.assertEqual(attached_programs(self.root.path), [])
        self.assertIn("signal 15: detaching", agent.log_text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
