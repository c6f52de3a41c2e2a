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
#include "../lib/enforce.h"

#define SK_DROP 0
#define SCAN_MAX 8192 /* bytes of one write examined: a request head */

struct scan_buffer {
	__u8 bytes[SCAN_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scan_buffer);
} apiwarden_scan_buffers SEC(".maps") __weak;

enum scan_state {
	SCAN_LINE_START, /* at the first byte of a line */
	SCAN_NAME,       /* in a header name (or the request line) */
	SCAN_VALUE,      /* after the colon */
	SCAN_CR,         /* a CR at a line start: the head ends at the LF */
};

struct scan {
	__u64 key0, key1;
	__u64 hash;       /* of the current word */
	__u32 len;        /* bytes to scan */
	__u32 word_len;   /* bytes in the current word */
	__u8 state;       /* enum scan_state */
	__u8 in_space;    /* the last byte was a space or tab: the next byte starts a word */
	struct apiwarden_cred_rule *found;
};

/* Whether the current task may present a credential bound to rule's owner. */
static __always_inline bool scan__allowed(const struct apiwarden_cred_rule *rule)
{
	if (!(rule->flags & APIWARDEN_RULE_BIND))
		return false;
	return bpf_get_current_ancestor_cgroup_id(rule->owner_level & (APIWARDEN_ENFORCE_MAX_LEVEL - 1)) ==
	       rule->owner_cgroup;
}

/* At the end of a header line: is its value's last word a refused credential? */
static __always_inline bool scan__line_end(struct scan *s)
{
	struct apiwarden_cred_rule *rule;
	__u64 hash;

	if (s->state != SCAN_VALUE || s->word_len == 0)
		return false;
	hash = apiwarden_cred_hash_finish(s->hash, s->key1);
	rule = bpf_map_lookup_elem(&apiwarden_cred_rules, &hash);
	if (!rule || !enforce__live(rule->expires_ns) || scan__allowed(rule))
		return false;
	s->found = rule;
	return true;
}

static long scan__byte(__u64 index, void *ctx)
{
	struct scan *s = ctx;
	struct scan_buffer *buffer;
	__u32 zero = 0;
	__u8 c;

	if (index >= s->len || index >= SCAN_MAX)
		return 1;
	buffer = bpf_map_lookup_elem(&apiwarden_scan_buffers, &zero);
	if (!buffer)
		return 1;
	c = buffer->bytes[index & (SCAN_MAX - 1)];

	if (c == '\n') {
		if (s->state == SCAN_CR)
			return 1; /* the blank line: end of the head */
		if (scan__line_end(s))
			return 1;
		s->state = SCAN_LINE_START;
		return 0;
	}
	switch (s->state) {
	case SCAN_LINE_START:
		s->state = c == '\r' ? SCAN_CR : SCAN_NAME;
		return 0;
	case SCAN_CR:
		s->state = SCAN_NAME;
		return 0;
	case SCAN_NAME:
		if (c == ':') {
			s->state = SCAN_VALUE;
			s->word_len = 0;
			s->in_space = 1;
		}
		return 0;
	}
	/* SCAN_VALUE */
	if (c == '\r')
		return 0; /* the LF that follows ends the line */
	if (c == ' ' || c == '\t') {
		s->in_space = 1;
		return 0;
	}
	if (s->in_space) {
		s->hash = s->key0;
		s->word_len = 0;
		s->in_space = 0;
	}
	s->hash = apiwarden_cred_hash_step(s->hash, c);
	s->word_len++;
	return 0;
}

SEC("sk_msg")
int apiwarden_enforce_msg(struct sk_msg_md *msg)
{
	struct apiwarden_enforce_config *config = enforce__config();
	struct apiwarden_rule_counters *counters;
	struct scan_buffer *buffer;
	struct scan s = {};
	__u32 zero = 0, len;
	void *data;

	if (!config || !config->cred_rules)
		return SK_PASS;
	len = msg->size;
	if (len > SCAN_MAX)
		len = SCAN_MAX;
	if (len == 0 || bpf_msg_pull_data(msg, 0, len, 0) != 0)
		return SK_PASS;
	data = (void *)(long)msg->data; /* linear for len bytes after the pull */
	buffer = bpf_map_lookup_elem(&apiwarden_scan_buffers, &zero);
	if (!buffer || len == 0 || len > SCAN_MAX)
		return SK_PASS;
	if (bpf_probe_read_kernel(buffer->bytes, len, data) != 0)
		return SK_PASS;

	s.key0 = config->hash_key[0];
	s.key1 = config->hash_key[1];
	s.len = len;
	bpf_loop(len, scan__byte, &s, 0);
	if (!s.found)
		return SK_PASS;
	counters = enforce__counters(s.found->rule_id);
	if (counters)
		counters->requests++;
	return s.found->flags & APIWARDEN_RULE_MONITOR ? SK_PASS : SK_DROP;
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
	state = bpf_sk_storage_get(&apiwarden_enforce_socks, (struct sock *)tp, 0, 0);
	if (state && state->role == APIWARDEN_ROLE_SERVER)
		return 0;
	cookie = bpf_get_socket_cookie(tp);
	bpf_map_update_elem(&apiwarden_enforce_sockhash, &cookie, tp, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
