#!/usr/bin/env bash
# The built-in demo: an API server and two client workloads, each in a cgroup of its own, call each
# other with real clients while apiwarden-agent records every call; then the reports workload
# replays the billing workload's stolen bearer token, and the agent raises the alert that names
# both. Then apiwardenctl binds the token to billing: the kernel refuses it from reports while
# billing keeps working. Everything is removed at the end (cgroups, processes, pinned programs).
set -euo pipefail
BUILD=${1:-build}
REPO=$(cd "$(dirname "$0")/.." && pwd)
AGENT=$REPO/$BUILD/bin/apiwarden-agent
CTL=$REPO/$BUILD/bin/apiwardenctl
[ -x "$AGENT" ] || { echo "demo: $AGENT is missing; run 'make build'" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then exec sudo "$0" "$@"; fi

MOUNT=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") { print $5; exit } } }' /proc/self/mountinfo)
[ -n "$MOUNT" ] || { echo "demo: no cgroup v2 hierarchy mounted" >&2; exit 1; }
ROOT=$MOUNT/apiwarden-demo-$$
PINS=/sys/fs/bpf/apiwarden-demo-$$
WORK=$(mktemp -d /tmp/apiwarden-demo.XXXXXX)
PORT=${DEMO_PORT:-18080}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for cg in "$ROOT"/*/ "$ROOT"; do
    [ -d "$cg" ] || continue
    for pid in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  sleep 0.2
  rm -rf "$PINS"  # unpinning the links detaches the enforcement programs
  rmdir "$ROOT"/*/ "$ROOT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Starts a command inside a cgroup: the subshell joins it, then execs.
in_cgroup() {
  local cg=$1; shift
  ( echo $BASHPID > "$ROOT/$cg/cgroup.procs"; exec "$@" ) &
  PIDS+=($!)
}

mkdir -p "$ROOT"/{api,billing,reports}
echo "== apiwarden demo: cgroups api, billing, reports under $ROOT"

"$AGENT" --cgroup-root "$ROOT" --records "$WORK/records.jsonl" --metrics-listen 127.0.0.1:9464 --state-dir "$WORK/state" \
  --alerts "$WORK/alerts.jsonl" --learning-period 2 \
  --enforce enforce --enforce-pin-dir "$PINS" --control-socket "$WORK/control.sock" 2> "$WORK/agent.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "monitoring cgroup" "$WORK/agent.log" 2>/dev/null && break; sleep 0.1; done
grep -q "monitoring cgroup" "$WORK/agent.log" || { cat "$WORK/agent.log" >&2; exit 1; }
echo "== agent running (metrics on http://127.0.0.1:9464/metrics)"

in_cgroup api python3 "$REPO/scripts/demo-api.py" "$PORT"
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

# billing: curl with a bearer token, several requests per connection.
in_cgroup billing bash -c "for i in \$(seq 1 6); do
  curl -s -H 'Authorization: Bearer demo-billing-token' \
    http://127.0.0.1:$PORT/api/invoices/\$i http://127.0.0.1:$PORT/api/invoices/\$((i+100)) > /dev/null; sleep 0.5; done"
# reports: Python urllib with an API key, and a POST.
in_cgroup reports python3 -c "
import time, urllib.request
for i in range(4):
    req = urllib.request.Request('http://127.0.0.1:$PORT/api/reports?week=%d' % i, headers={'X-API-Key': 'demo-key'})
    urllib.request.urlopen(req).read()
    post = urllib.request.Request('http://127.0.0.1:$PORT/api/reports', data=b'{}', method='POST')
    urllib.request.urlopen(post).read()
    time.sleep(0.7)
"
# reports, 3 s in: replays the billing workload's token (stolen from a log, say) with curl.
in_cgroup reports bash -c "sleep 3; curl -s -H 'Authorization: Bearer demo-billing-token' \
  http://127.0.0.1:$PORT/api/invoices/7 > /dev/null"

echo "== records as they arrive (JSON Lines; first three in full, then one line each)"
python3 - "$WORK/records.jsonl" <<'PY' &
import json, os, sys, time
path, shown, deadline = sys.argv[1], 0, time.time() + 6
while not os.path.exists(path):
    time.sleep(0.1)
with open(path) as f:
    while time.time() < deadline:
        line = f.readline()
        if not line:
            time.sleep(0.1); continue
        r = json.loads(line)
        if shown < 3:
            print(line.rstrip(), flush=True)
        elif r["type"] == "http":
            h = r["http"]
            print(f'{r["direction"]:6} {r["workload"].get("cgroup_path","?"):40} {h["method"]:4} {h["path"]:28} '
                  f'{h.get("status","-")}  {h["latency_us"]:>6} us  cred={r["credential"]["scheme"]}'
                  f'{":" + r["credential"]["fingerprint"][:8] if "fingerprint" in r["credential"] else ""}', flush=True)
        else:
            print(f'{r["direction"]:6} {r["workload"].get("cgroup_path","?"):40} connection closed: '
                  f'{r["bytes_sent"]} B sent, {r["bytes_received"]} B received, {r["http_requests"]} requests', flush=True)
        shown += 1
PY
PIDS+=($!)
sleep 6.5
echo "== summary"
python3 - "$WORK/records.jsonl" <<'PY'
import collections, json, sys
counts = collections.Counter()
for line in open(sys.argv[1]):
    r = json.loads(line)
    counts[(r["type"], r["direction"], r["workload"].get("cgroup_path", "?").rsplit("/", 1)[-1])] += 1
for (kind, direction, workload), n in sorted(counts.items()):
    print(f"  {n:4} {kind:10} records, {direction:6} side of {workload}")
PY
curl -s http://127.0.0.1:9464/metrics | grep -E '^apiwarden_(http_requests_total|capture_lost_total)' | head -12
echo "== alerts (JSON Lines; the first in full)"
python3 - "$WORK/alerts.jsonl" <<'PY'
import json, os, sys
lines = open(sys.argv[1]).read().splitlines() if os.path.exists(sys.argv[1]) else []
for i, line in enumerate(lines):
    a = json.loads(line)
    print(line if i == 0 else f'  [{a["severity"]}] {a["detector"]}: {a["summary"]}')
if not lines:
    print("  (none)")
PY

echo "== enforcement: bind the stolen token to its owner, billing"
FP=$(python3 -c "
import json, sys
for line in open(sys.argv[1]):
    a = json.loads(line)
    if a.get('detector') == 'shared_credential':
        print(a['credential']['fingerprint']); break
" "$WORK/alerts.jsonl")
[ -n "$FP" ] || { echo "demo: no shared_credential alert to act on" >&2; exit 1; }
"$CTL" --socket "$WORK/control.sock" bind "$FP" "cgroup:${ROOT#$MOUNT}/billing" --ttl 10m \
  --reason "token replayed by reports" --by demo
attempt() {  # workload: prints the HTTP status, or how the kernel refused the request
  local cg=$1 code rc
  in_cgroup "$cg" bash -c "code=\$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer demo-billing-token' \
    http://127.0.0.1:$PORT/api/invoices/8 2> /dev/null); echo \"\$code \$?\" > '$WORK/$cg.out'"
  wait "${PIDS[-1]}" || true
  read -r code rc < "$WORK/$cg.out"
  if [ "$rc" -eq 0 ]; then
    echo "  $cg (the token's owner): HTTP $code"
  else
    echo "  $cg (the thief): refused in the kernel, the request never left (curl exit $rc: failed sending data)"
  fi
}
attempt billing
attempt reports
sleep 1.2  # the agent raises what the kernel refused at its next tick
"$CTL" --socket "$WORK/control.sock" list
python3 - "$WORK/alerts.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    a = json.loads(line)
    if a.get("type") == "audit":
        print(f'  audit: {a["event"]} {a["rule"]["id"]} by {a["actor"]}: {a["rule"]["reason"]}')
    elif a.get("detector", "").startswith("enforcement"):
        print(f'  [{a["severity"]}] {a["detector"]}: {a["summary"]}')
PY
echo "== done; cleaning up"
