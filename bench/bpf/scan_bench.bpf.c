// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The credential scan of credential.bpf.c (lib/credential_scan.h), in a program type that
 * BPF_PROG_TEST_RUN can repeat: the kernel times it over a fixed request head, so changes to the
 * scan are measured in nanoseconds, away from the noise of a whole HTTP benchmark. The head
 * follows a 14-byte Ethernet header. Returns 2 when the scan found a refused credential, 1 when it
 * reached the head's end, 0 otherwise.
 */
#include "../../bpf/lib/credential_scan.h"

#define ETH_HLEN 14

SEC("tc")
int apiwarden_scan_bench(struct __sk_buff *skb)
{
	struct apiwarden_enforce_config *config = enforce__config();
	struct scan_scratch *scratch = credential_scratch(SCAN_SENDER);
	__u32 len;

	if (!config || !scratch)
		return 0;
	len = skb->len - ETH_HLEN;
	if (len > SCAN_MAX)
		len = SCAN_MAX;
	if (len == 0)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, scratch->bytes, len) != 0)
		return 0;
	credential_scan_init(&scratch->s, config, false, len);
	credential_scan(SCAN_SENDER, len);
	return scratch->s.found ? 2 : scratch->s.head_done ? 1 : 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
