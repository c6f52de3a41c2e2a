#!/usr/bin/env bash
# Runs every benchmark; each prints its figure last.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
export APIWARDEN_BUILD=$PWD/$BUILD
echo "== pipeline vs raw drain (user space, same records)"
"$BUILD/bin/apiwarden_pipeline_bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
echo "== detectors' cost per request (same records with and without them)"
"$BUILD/bin/apiwarden_detect_bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
echo "== request-rate overhead (wrk + nginx, agent on vs off, interleaved medians)"
/usr/bin/python3 bench/http_overhead.py
echo "== ingest at full speed (beyond the target: where loss starts on this machine)"
/usr/bin/python3 bench/ingest.py --seconds 20
echo "== sustained ingest at the target (wrk paced to ~50,000 req/s + nginx, 60 s)"
/usr/bin/python3 bench/ingest.py --seconds 60 --paced --connections 125
echo "== enforcement latency (apiwardenctl cut -> first refused connect / first dropped packet)"
/usr/bin/python3 bench/enforce_latency.py
echo "== the credential scan's time per request head (in the kernel, BPF_PROG_TEST_RUN)"
"$BUILD/bin/apiwarden_credential_scan_bench"
echo "== credential check cost (wrk keep-alive, revoke rule for another token vs none, interleaved medians)"
/usr/bin/python3 bench/credential_overhead.py
