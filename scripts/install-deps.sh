#!/usr/bin/env bash
# Installs what apiwarden needs to build, test and run its demo on Debian 12.
# Idempotent: packages already present are not touched; run as root (or via sudo).
set -euo pipefail

packages=(
  # build
  cmake make g++ clang llvm pkg-config
  # BPF toolchain and libbpf
  libbpf-dev bpftool libelf-dev zlib1g-dev
  # user-space libraries
  libboost-dev prometheus-cpp-dev libspdlog-dev libfmt-dev protobuf-compiler libprotobuf-dev
  nlohmann-json3-dev libcli11-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcurl4-openssl-dev libyaml-cpp-dev
  # real peers for tests, demo and benchmarks
  nginx-light curl wrk python3 python3-yaml nodejs iproute2 openssl procps
)

missing=()
for p in "${packages[@]}"; do
  # nodejs may come from another repository than Debian's; any installed version will do.
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the nginx service it just installed where it can; tests run their own instances.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && [ -f /run/nginx.pid ]; then
  $SUDO service nginx stop >/dev/null 2>&1 || true
fi
echo "install-deps: done"
