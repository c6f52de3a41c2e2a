// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Refusing credentials in the kernel, on the sending side: an sk_msg program sees each write of a
 * client socket (in the sockhash below) before it leaves, hashes the last word of every header
 * value with the installation's key (apiwarden_cred_hash_* in abi.h: "Bearer <token>" hashes
 * <token>, "X-API-Key: <key>" hashes <key>), and refuses the write (EACCES) when the hash is a
 * revoked credential, or one bound to another workload. The agent computes the same hash for the
 * tokens it sees and installs it; the kernel never holds a token. Client sockets join the
 * sockhash at establishment (enforce.bpf.c's sock_ops) while credential rules exist.
 */
#include "../lib/credential_scan.h"

#define SK_DROP 0

SEC("sk_msg")
int apiwarden_enforce_msg(struct sk_msg_md *msg)
{
	struct apiwarden_enforce_config *config = enforce__config();
	struct apiwarden_rule_counters *counters;
	struct scan_scratch *scratch;
	__u32 len;

	if (!config || !config->cred_rules)
		return SK_PASS;
	len = msg->size;
	if (len > SCAN_MAX)
		len = SCAN_MAX;
	if (len == 0 || bpf_msg_pull_data(msg, 0, len, 0) != 0)
		return SK_PASS;
	scratch = credential_scratch(SCAN_SENDER);
	/* msg->data is linear for len bytes after the pull. */
	if (!scratch || bpf_probe_read_kernel(scratch->bytes, len, (void *)(long)msg->data) != 0)
		return SK_PASS;
	credential_scan_init(&scratch->s, config, false, len);
	credential_scan(SCAN_SENDER, len);
	if (!scratch->s.found)
		return SK_PASS;
	counters = enforce__counters(scratch->s.rule_id);
	if (counters)
		counters->requests++;
	return scratch->s.rule_flags & APIWARDEN_RULE_MONITOR ? SK_PASS : SK_DROP;
}

/*
 * Client sockets established before the first credential rule: the agent runs this iterator
 * when it installs one, so keep-alive connections already open are checked too. Only sockets
 * below the enforced cgroup (config's root) are added.
 */
SEC("iter/tcp")
int apiwarden_enforce_join_sockhash(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct apiwarden_enforce_config *config;
	struct enforce_sock *state;
	struct tcp_sock *tp;
	struct cgroup *cgrp;
	__u64 cookie;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp || tp->inet_conn.icsk_inet.sk.__sk_common.skc_state != BPF_TCP_ESTABLISHED)
		return 0;
	config = enforce__config();
	if (!config || !config->root_cgroup)
		return 0;
	cgrp = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	if (!cgrp || enforce__ancestor(CGROUP_STRUCT, cgrp, config->root_level) != config->root_cgroup)
		return 0;
	state = bpf_sk_storage_get(&apiwarden_socket_state, (struct sock *)tp, 0, 0);
	if (state && state->role == APIWARDEN_ROLE_SERVER)
		return 0;
	cookie = bpf_get_socket_cookie(tp);
	bpf_map_update_elem(&apiwarden_enforce_sockhash, &cookie, tp, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
