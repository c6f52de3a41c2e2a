"""A local HTTPS server that answers like the Kubernetes API for pods: a node-scoped list, a watch
stream with ADDED/MODIFIED/DELETED/BOOKMARK events and ERROR 410 for expired resourceVersions,
and bearer-token authentication. No API server can run here; this speaks its JSON."""
import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def pod(uid, name, namespace, node, service_account="default", labels=None, owner=None):
    metadata = {"uid": uid, "name": name, "namespace": namespace, "labels": labels or {}}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                        "uid": "owner-" + uid, "controller": True}]
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata,
            "spec": {"nodeName": node, "serviceAccountName": service_account, "containers": [{"name": "main"}]},
            "status": {"phase": "Running"}}


class FakeKubeApi:
    def __init__(self, cert, key, token):
        self.token = token
        self.lock = threading.Condition()
        self.rv = 100
        self.pods = {}
        self.events = []        # (resourceVersion, type, pod object)
        self.oldest_rv = 100    # watches from an older resourceVersion get 410
        self.lists = self.watches = 0
        self.closed = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                api.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- what a test does to the cluster ---
    def _emit(self, kind, obj):
        self.rv += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, kind, obj))
        return obj

    def put(self, obj):
        with self.lock:
            uid = obj["metadata"]["uid"]
            obj = self._emit("MODIFIED" if uid in self.pods else "ADDED", obj)
            self.pods[uid] = obj
            self.lock.notify_all()

    def delete(self, uid):
        with self.lock:
            obj = self.pods.pop(uid)
            self._emit("DELETED", obj)
            self.lock.notify_all()

    def expire(self):
        """Compaction: every resourceVersion so far is gone; open watches get ERROR 410 and a
        relist (which returns the new resourceVersion) is the way back."""
        with self.lock:
            self.rv += 1
            self.oldest_rv = self.rv
            self.lock.notify_all()

    # --- the API ---
    def handle(self, req):
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return self._json(req, 401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
        url = urllib.parse.urlparse(req.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path != "/api/v1/pods":
            return self._json(req, 404, {"kind": "Status", "code": 404})
        node = query.get("fieldSelector", "").removeprefix("spec.nodeName=")
        if query.get("watch") in ("1", "true"):
            return self._watch(req, node, int(query.get("resourceVersion") or 0), query)
        with self.lock:
            self.lists += 1
            items = [p for p in self.pods.values() if p["spec"]["nodeName"] == node]
            body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)},
                    "items": items}
        self._json(req, 200, body)

    def _json(self, req, status, body):
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _watch(self, req, node, since, query):
        with self.lock:
            self.watches += 1
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.end_headers()  # HTTP/1.0: the body runs until the server closes
        deadline = time.monotonic() + min(int(query.get("timeoutSeconds", 30)), 30)
        last_bookmark = time.monotonic()
        try:
            while time.monotonic() < deadline:
                with self.lock:
                    if since < self.oldest_rv or self.closed:
                        if not self.closed:
                            self._line(req, {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                                        "reason": "Expired"}})
                        return
                    pending = [(rv, t, o) for rv, t, o in self.events if rv > since]
                    if not pending and time.monotonic() - last_bookmark < 0.5:
                        self.lock.wait(0.1)
                        continue
                for rv, kind, obj in pending:
                    if obj["spec"]["nodeName"] == node:
                        self._line(req, {"type": kind, "object": obj})
                    since = rv
                if time.monotonic() - last_bookmark >= 0.5:
                    last_bookmark = time.monotonic()
                    self._line(req, {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {
                        "resourceVersion": str(since)}}})
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return

    @staticmethod
    def _line(req, event):
        req.wfile.write(json.dumps(event).encode() + b"\n")
        req.wfile.flush()
