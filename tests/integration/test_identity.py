"""Workload identity end to end: cgroup trees named like kubepods, pod metadata from a local
server speaking the Kubernetes API's JSON (list, watch, bookmarks, 410), real traffic, records
that carry pod, namespace, service account, owner, labels, container id and SPIFFE ID."""
import base64
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_kube_api import FakeKubeApi, pod  # noqa: E402
from harness import IntegrationTest, apiwardenctl, free_port, wait_for  # noqa: E402

NODE = "node-a"
# One request, then a pause: the process outlives the call, so the agent can read /proc/<pid>/exe.
CLIENT = "import sys, time, urllib.request; urllib.request.urlopen(sys.argv[1]).read(); time.sleep(0.5)"
UID_WEB = "0b6c2f4e-1111-4a5b-8c9d-0123456789ab"
UID_DB = "7f3a9d2c-2222-4b6c-9d0e-abcdef012345"
UID_JOB = "5e4d3c2b-3333-4c7d-8e9f-fedcba987654"
ID_WEB, ID_DB, ID_JOB = "a" * 64, "b" * 64, "c" * 64


def systemd_pod(root, uid, qos):
    uid_ = uid.replace("-", "_")
    if qos == "guaranteed":
        return root.child("kubepods.slice").child(f"kubepods-pod{uid_}.slice")
    return root.child("kubepods.slice").child(f"kubepods-{qos}.slice").child(f"kubepods-{qos}-pod{uid_}.slice")


class IdentityTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        cert, key = self.make_cert("127.0.0.1", ip=True)
        self.api = FakeKubeApi(cert, key, token="t0ken-for-tests")
        self.addCleanup(self.api.close)
        with open(cert, "rb") as f:
            ca = base64.b64encode(f.read()).decode()
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
current-context: test
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:{self.api.port}
    certificate-authority-data: {ca}
users:
- name: agent
  user:
    token: t0ken-for-tests
contexts:
- name: test
  context: {{cluster: test, user: agent}}
""")

    def test_records_carry_pod_identity_through_list_watch_and_relist(self):
        self.api.put(pod(UID_WEB, "web-7d9f8b6c5d-x2x9q", "shop", NODE, "frontend",
                         {"app": "web", "pod-template-hash": "7d9f8b6c5d"}, ("ReplicaSet", "web-7d9f8b6c5d")))
        self.api.put(pod(UID_DB, "db-0", "shop", NODE, "api", {"app": "db"}, ("StatefulSet", "db")))
        self.api.put(pod("9999", "elsewhere", "shop", "node-b"))  # another node's pod: never listed
        web_pod = systemd_pod(self.root, UID_WEB, "burstable")
        web = web_pod.child(f"cri-containerd-{ID_WEB}.scope")
        db = systemd_pod(self.root, UID_DB, "guaranteed").child(f"cri-containerd-{ID_DB}.scope")
        port = free_port()
        self.start_nginx(db, port)

        agent = self.start_agent("--kubeconfig", self.kubeconfig, "--node-name", NODE)
        wait_for(lambda: "listed 2 pods on node node-a" in agent.log_text(), what="the pod list")
        self.run_in([sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}/api/x"], web)

        client = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == web.id, 1)[0]
        w = client["workload"]
        self.assertEqual((w["pod"], w["namespace"], w["service_account"], w["owner"]),
                         ("web-7d9f8b6c5d-x2x9q", "shop", "frontend", "Deployment/web"))
        self.assertEqual(w["spiffe_id"], "spiffe://cluster.local/ns/shop/sa/frontend")
        self.assertEqual((w["container_id"], w["pod_uid"], w["node"]), (ID_WEB, UID_WEB, NODE))
        self.assertEqual(w["labels"], {"app": "web", "pod-template-hash": "7d9f8b6c5d"})
        self.assertEqual(w["process"]["exe"], os.path.realpath(sys.executable))
        self.assertEqual(w["process"]["user"], "root")
        server = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == db.id, 1)[0]
        self.assertEqual((server["workload"]["pod"], server["workload"]["owner"], server["workload"]["spiffe_id"]),
                         ("db-0", "StatefulSet/db", "spiffe://cluster.local/ns/shop/sa/api"))

        # A pod that appears through the watch, after the list.
        self.api.put(pod(UID_JOB, "report-28391-abcde", "batch", NODE, "reporter", {}, ("Job", "report-28391")))
        job = systemd_pod(self.root, UID_JOB, "besteffort").child(f"crio-{ID_JOB}.scope")
        wait_for(lambda: self.api.watches >= 1, what="a watch")
        self.run_until_identified(agent, job, port, "report-28391-abcde")

        # Compaction: the watch's resourceVersion expires (410), the agent relists and carries on.
        lists_before = self.api.lists
        self.api.expire()
        wait_for(lambda: self.api.lists > lists_before, what="a relist after 410")
        self.api.put(pod(UID_JOB, "report-28391-abcde", "batch", NODE, "reporter2", {}, ("Job", "report-28391")))
        self.api.delete(UID_DB)
        agent.stop()
        self.assertIn("is gone (410): relisting", agent.log_text())

    def run_until_identified(self, agent, cgroup, port, pod_name):
        """Watch events reach the agent asynchronously: call until a record names the pod."""
        def named():
            self.run_in(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{port}/api/y"], cgroup)
            return [r for r in agent.records() if r["type"] == "http" and r["workload"]["cgroup_id"] == cgroup.id
                    and r["workload"].get("pod") == pod_name]
        try:
            recs = wait_for(named, timeout=10, interval=0.3, what=f"a record naming {pod_name}")
        except AssertionError:
            print([r["workload"] for r in agent.records() if r["workload"]["cgroup_id"] == cgroup.id][:2])
            print(agent.log_text()[-2000:])
            raise
        self.assertEqual(recs[0]["workload"]["container_id"], ID_JOB)
        self.assertEqual(recs[0]["workload"]["spiffe_id"], "spiffe://cluster.local/ns/batch/sa/reporter")

    def test_enforcement_names_workloads_by_pod_owner_and_spiffe_id(self):
        self.api.put(pod(UID_WEB, "web-7d9f8b6c5d-x2x9q", "shop", NODE, "frontend",
                         {"app": "web", "pod-template-hash": "7d9f8b6c5d"}, ("ReplicaSet", "web-7d9f8b6c5d")))
        db = pod(UID_DB, "db-0", "shop", NODE, "api", {"app": "db"}, ("StatefulSet", "db"))
        db["status"]["podIP"] = "127.0.0.2"
        self.api.put(db)
        web_pod = systemd_pod(self.root, UID_WEB, "burstable")
        web = web_pod.child(f"cri-containerd-{ID_WEB}.scope")
        other, api = self.root.child("other"), self.root.child("api")
        port = free_port()
        self.start_nginx(api, port)
        pins = f"/sys/fs/bpf/apiwarden-it-{os.getpid()}-identity"
        self.addCleanup(lambda: shutil.rmtree(pins, ignore_errors=True))
        socket_path = os.path.join(self.workdir, "control.sock")
        agent = self.start_agent("--kubeconfig", self.kubeconfig, "--node-name", NODE, "--enforce", "enforce",
                                 "--enforce-pin-dir", pins, "--control-socket", socket_path)
        wait_for(lambda: "listed 2 pods on node node-a" in agent.log_text() and "control socket" in agent.log_text(),
                 what="the pod list and the control socket")

        def ctl(*args):
            return apiwardenctl(socket_path, *args)[1]

        def connects(cgroup, host="127.0.0.1"):
            code = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[2], int(sys.argv[1])), 2)"
                    "\n    print('ok')\nexcept OSError as e:\n    print(e.errno)")
            return self.run_in([sys.executable, "-c", code, str(port), host], cgroup).decode().strip()
        pod_dir = web_pod.path[len(os.path.dirname(self.root.path)):]
        for name in ("pod:shop/web-7d9f8b6c5d-x2x9q", "owner:shop/Deployment/web",
                     "spiffe://cluster.local/ns/shop/sa/frontend"):
            answer = ctl("cut", name)
            self.assertTrue(answer["ok"], answer)
            self.assertEqual(answer["rule"]["cgroups"], [pod_dir], "the pod's cgroup, covering its containers")
            self.assertEqual(connects(web), "1", name)  # EPERM
            self.assertEqual(connects(other), "ok", name)
            self.assertTrue(ctl("restore", answer["rule"]["id"])["ok"])
            self.assertEqual(connects(web), "ok", name)

        # A destination named as a workload: its pods' own addresses (the db pod has 127.0.0.2).
        answer = ctl("cut", "pod:shop/web-7d9f8b6c5d-x2x9q", "--to", "pod:shop/db-0")
        self.assertTrue(answer["ok"], answer)
        self.assertEqual(answer["rule"]["destinations"], ["127.0.0.2"])
        self.assertEqual(connects(web, "127.0.0.2"), "1", "EPERM towards db")
        self.assertEqual(connects(other, "127.0.0.2"), "111", "others reach it (nothing listens: refused)")
        self.assertEqual(connects(web), "ok", "other destinations stay open")
        self.assertIn("no pod of it", ctl("cut", "cgroup:" + other.path[len(os.path.dirname(self.root.path)):],
                                          "--to", "pod:shop/nope")["error"])

    def test_host_services_are_named_by_systemd_unit_and_process(self):
        unit = self.root.child("system.slice").child("inventory.service")
        port = free_port()
        self.start_nginx(unit, port)
        agent = self.start_agent()
        self.run_in(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{port}/api/x"], self.root.child("cli"))
        rec = agent.wait_records(lambda r: r["type"] == "http" and r["workload"]["cgroup_id"] == unit.id, 1)[0]
        self.assertEqual(rec["workload"]["systemd_unit"], "inventory.service")
        self.assertEqual(rec["workload"]["process"]["exe"], os.path.realpath(subprocess.check_output(
            ["which", "nginx"], text=True).strip()))
        for absent in ("pod", "namespace", "spiffe_id", "container_id"):
            self.assertNotIn(absent, rec["workload"])  # nothing guessed


if __name__ == "__main__":
    unittest.main(verbosity=2)
