// The kernel's credential scan (bpf/lib/credential_scan.h) timed by the kernel itself:
// BPF_PROG_TEST_RUN repeats a program running the same scan as the sk_msg check over a fixed
// request head and reports the mean time per run. One line per head; the last line is the
// typical keep-alive request's figure (that of bench/credential_overhead.py's wrk).
#include "apiwarden/abi.h"
#include "agent/credentials/token_hash.h"
#include "scan_bench.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::array<uint64_t, 2> kKey = {0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL};
constexpr int kRuns = 9;
constexpr uint32_t kRepeat = 100000;

struct Head {
  const char* name;
  std::string bytes;
  int expected;  // what the program returns: 2 refused credential found, 1 head end reached
};

std::string jwt() {
  std::string token = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.";
  for (int i = 0; token.size() < 700; ++i) token += static_cast<char>('A' + (i * 7) % 26);
  return token + ".c2lnbmF0dXJl";
}

std::vector<Head> heads() {
  const std::string wrk = "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer ";
  return {
      {"wrk keep-alive (bench/credential_overhead.py)", wrk + "tok-bench-benign-4f1c9a\r\n\r\n", 1},
      {"the same, revoked token", wrk + "tok-bench-revoked-7d02e5\r\n\r\n", 2},
      {"curl with a 750-byte JWT",
       "GET /api/v1/orders/1234?expand=items HTTP/1.1\r\nHost: orders.shop.svc.cluster.local:8443\r\n"
       "User-Agent: curl/7.88.1\r\nAccept: */*\r\nAuthorization: Bearer " + jwt() + "\r\n\r\n",
       1},
      {"browser-like head, cookies, 1 KiB",
       "GET /account/settings HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive\r\n"
       "sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\nsec-ch-ua-mobile: ?0\r\n"
       "sec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\n"
       "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
       "Chrome/131.0.0.0 Safari/537.36\r\n"
       "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
       "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\n"
       "Sec-Fetch-Dest: document\r\nReferer: https://app.example.com/account\r\n"
       "Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-GB,en;q=0.9,de;q=0.8\r\n"
       "Cookie: _ga=GA1.1.1234567890.1733400000; theme=dark; session=" + std::string(220, 'q') +
       "; csrftoken=" + std::string(64, 'z') + "\r\n\r\n",
       1},
  };
}

// Mean ns per run over kRepeat runs of the program on one frame; -1 on failure.
double timeOnce(int prog_fd, const std::string& frame, int expected) {
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_size_in = static_cast<uint32_t>(frame.size()),
              .repeat = kRepeat);
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) {
    std::perror("BPF_PROG_TEST_RUN");
    return -1;
  }
  if (static_cast<int>(opts.retval) != expected) {
    std::fprintf(stderr, "the scan returned %u, expected %d\n", opts.retval, expected);
    return -1;
  }
  return opts.duration;
}

}  // namespace

int main() {
  if (geteuid() != 0) {
    std::fprintf(stderr, "credential_scan_bench: BPF_PROG_TEST_RUN needs root\n");
    return 1;
  }
  auto load_start = std::chrono::steady_clock::now();
  scan_bench* skel = scan_bench__open_and_load();
  double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  if (!skel) {
    std::fprintf(stderr, "credential_scan_bench: cannot load the program: %s\n", std::strerror(errno));
    return 1;
  }
  // One rule, for the revoked token, as `apiwardenctl revoke` would install it.
  uint64_t revoked = apiwarden::credentials::tokenHash(kKey, "tok-bench-revoked-7d02e5");
  apiwarden_cred_rule rule{};
  rule.rule_id = 1;
  apiwarden_enforce_config config{};
  config.cred_rules = 1;
  config.hash_key[0] = kKey[0];
  config.hash_key[1] = kKey[1];
  config.cred_filter = 1ULL << (revoked & 63);
  uint32_t zero = 0;
  int status = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel->maps.apiwarden_cred_rules), &revoked, &rule, BPF_ANY) != 0 ||
      bpf_map_update_elem(bpf_map__fd(skel->maps.apiwarden_enforce_config), &zero, &config, BPF_ANY) != 0) {
    std::perror("credential_scan_bench: map update");
    status = 1;
  }
  std::printf("load and verification: %.0f ms\n", load_ms);
  int prog_fd = bpf_program__fd(skel->progs.apiwarden_scan_bench);
  // Heads interleaved run by run, so a disturbance of the machine hits all of them alike.
  std::vector<Head> all = status == 0 ? heads() : std::vector<Head>{};
  std::vector<std::vector<double>> runs(all.size());
  for (int i = 0; i < kRuns && status == 0; ++i) {
    for (size_t h = 0; h < all.size() && status == 0; ++h) {
      std::string frame(14, '\0');  // the Ethernet header BPF_PROG_TEST_RUN expects for "tc"
      frame += all[h].bytes;
      double ns = timeOnce(prog_fd, frame, all[h].expected);
      if (ns < 0) status = 1;
      runs[h].push_back(ns);
    }
  }
  double typical = 0;
  for (size_t h = 0; h < all.size() && status == 0; ++h) {
    std::nth_element(runs[h].begin(), runs[h].begin() + kRuns / 2, runs[h].end());
    double median = runs[h][kRuns / 2];
    if (h == 0) typical = median;
    std::printf("%-48s %5zu bytes %7.0f ns per scan  %5.2f ns/byte\n", all[h].name, all[h].bytes.size(), median,
                median / all[h].bytes.size());
  }
  scan_bench__destroy(skel);
  if (status == 0)
    std::printf("credential scan of the typical keep-alive request head (median of %d x %u runs): %.0f ns\n", kRuns,
                kRepeat, typical);
  return status;
}
