// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Cutting a workload's network access (rules in lib/enforce.h maps, filled by the agent):
 *  - connect4/connect6 refuse new connections (EPERM) of a cut workload;
 *  - cgroup_skb drops stray packets of its connections;
 *  - iter/tcp tears down its established connections, run by the agent after each cut.
 * The agent attaches these below the cgroup hierarchy's root only.
 */
#include "../lib/credential_scan.h"
#include "../lib/packet.h"

#define SK_DROP 0
#define SOCK_STREAM 1

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

static __always_inline void enforce__count_connect(const struct apiwarden_cut_rule *rule)
{
	struct apiwarden_rule_counters *counters = enforce__counters(rule->rule_id);

	if (counters)
		counters->connects++;
}

static __always_inline int enforce__connect(void *ctx, const __u8 addr[16], __u16 port)
{
	struct apiwarden_cut_rule *rule;
	__u64 cgroup_id;

	rule = enforce__cut_rule(CGROUP_CURRENT, ctx, &cgroup_id);
	if (!rule || !enforce__egress_matches(rule, cgroup_id, addr, port))
		return 1;
	enforce__count_connect(rule);
	return rule->flags & APIWARDEN_RULE_MONITOR ? 1 : 0;
}

SEC("cgroup/connect4")
int apiwarden_enforce_connect4(struct bpf_sock_addr *ctx)
{
	__u8 addr[16];

	addr__set_v4_mapped(addr, ctx->user_ip4);
	return enforce__connect(ctx, addr, bpf_ntohs((__u16)ctx->user_port));
}

SEC("cgroup/connect6")
int apiwarden_enforce_connect6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];

	/* A v4-mapped destination (::ffff:a.b.c.d) comes here too; rules store IPv4 that way. */
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	return enforce__connect(ctx, (const __u8 *)addr, bpf_ntohs((__u16)ctx->user_port));
}

static __always_inline __u8 enforce__role(struct bpf_sock *sk)
{
	struct enforce_sock *state;

	if (!sk)
		return APIWARDEN_ROLE_UNKNOWN;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return APIWARDEN_ROLE_UNKNOWN;
	state = bpf_sk_storage_get(&apiwarden_socket_state, sk, 0, 0);
	return state ? state->role : APIWARDEN_ROLE_UNKNOWN;
}

/*
 * Whether a packet belongs to what the rule cuts: egress rules cut the connections the workload
 * opened, ingress rules the ones it accepted; a connection whose opener is unknown (it predates the
 * programs) counts as both. remote/remote_port: the peer's end of the connection.
 */
static __always_inline bool enforce__packet_matches(const struct apiwarden_cut_rule *rule, __u64 cgroup_id,
						    __u8 role, const __u8 remote[16], __u16 remote_port)
{
	if ((rule->flags & APIWARDEN_RULE_INGRESS) && role != APIWARDEN_ROLE_CLIENT)
		return true;
	return role != APIWARDEN_ROLE_SERVER && enforce__egress_matches(rule, cgroup_id, remote, remote_port);
}

static __always_inline int enforce__packet(struct __sk_buff *skb, __u8 direction)
{
	struct apiwarden_rule_counters *counters;
	struct apiwarden_cut_rule *rule;
	struct packet_info pi = {};
	__u64 cgroup_id;
	bool match;

	rule = enforce__cut_rule(CGROUP_SKB, skb, &cgroup_id);
	if (!rule)
		return 1;
	switch (packet__parse(skb, &pi)) {
	case PACKET_TCP:
		if (direction == APIWARDEN_DIR_EGRESS)
			match = enforce__packet_matches(rule, cgroup_id, enforce__role(skb->sk), pi.daddr, pi.dport);
		else
			match = enforce__packet_matches(rule, cgroup_id, enforce__role(skb->sk), pi.saddr, pi.sport);
		break;
	default:
		/* Not TCP (or unreadable): a whole-direction cut drops it, a destination cut lets it be. */
		match = direction == APIWARDEN_DIR_EGRESS
				? (rule->flags & (APIWARDEN_RULE_EGRESS | APIWARDEN_RULE_DESTINATIONS)) == APIWARDEN_RULE_EGRESS
				: (rule->flags & APIWARDEN_RULE_INGRESS) != 0;
		break;
	}
	if (!match)
		return 1;
	counters = enforce__counters(rule->rule_id);
	if (counters)
		counters->packets++;
	return rule->flags & APIWARDEN_RULE_MONITOR ? 1 : SK_DROP;
}

SEC("cgroup_skb/egress")
int apiwarden_enforce_egress(struct __sk_buff *skb)
{
	return enforce__packet(skb, APIWARDEN_DIR_EGRESS);
}

/* Whether a segment starts like a request line: an upper-case method and a space. */
static __always_inline bool enforce__request_start(const __u8 *bytes, __u32 len)
{
	if (len < 4 || bytes[0] < 'A' || bytes[0] > 'Z')
		return false;
	for (int i = 1; i < 8 && i < len; i++) {
		if (bytes[i] == ' ')
			return true;
		if (bytes[i] < 'A' || bytes[i] > 'Z')
			return false;
	}
	return false;
}

/*
 * The receiving side of the credential check, for requests from senders apiwarden does not see
 * (other nodes): a request head reaching a server socket of the subtree with a revoked
 * credential is dropped before the server can read it, and so is the rest of that connection;
 * the agent resets it (teardown) at its next tick. Heads continue across segments: the scan's
 * state is kept with the socket. Bind rules are not checked here (the sender is unknown).
 */
/*
 * Whether the sender is a client socket of this node's subtree: its writes were checked at the
 * sender (sk_msg), so the receiving side leaves them alone (and counts nothing twice).
 */
static __always_inline bool enforce__checked_at_sender(struct __sk_buff *skb, const struct packet_info *pi)
{
	struct bpf_sock_tuple tuple = {};
	struct enforce_sock *peer_state;
	struct bpf_sock *peer;
	__u32 size;

	if (pi->family == AF_INET) {
		__builtin_memcpy(&tuple.ipv4.saddr, pi->daddr + 12, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, pi->saddr + 12, 4);
		tuple.ipv4.sport = bpf_htons(pi->dport);
		tuple.ipv4.dport = bpf_htons(pi->sport);
		size = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.saddr, pi->daddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, pi->saddr, 16);
		tuple.ipv6.sport = bpf_htons(pi->dport);
		tuple.ipv6.dport = bpf_htons(pi->sport);
		size = sizeof(tuple.ipv6);
	}
	peer = bpf_sk_lookup_tcp(skb, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!peer)
		return false;
	peer_state = bpf_sk_storage_get(&apiwarden_socket_state, peer, 0, 0);
	bool checked = peer_state && peer_state->role == APIWARDEN_ROLE_CLIENT;
	bpf_sk_release(peer);
	return checked;
}

static __always_inline int enforce__credential_ingress(struct __sk_buff *skb)
{
	struct apiwarden_enforce_config *config = enforce__config();
	struct apiwarden_rule_counters *counters;
	struct packet_info pi = {};
	struct scan_scratch *scratch;
	struct enforce_sock *state;
	struct bpf_sock *sk;
	struct scan *s;
	__u32 len;

	if (!config || !config->cred_rules)
		return 1;
	sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	state = bpf_sk_storage_get(&apiwarden_socket_state, sk, 0, 0);
	if (!state || state->role != APIWARDEN_ROLE_SERVER)
		return 1;
	if (state->refused)
		return SK_DROP;
	if (state->sender == SENDER_CHECKED)
		return 1; /* the peer's writes are checked where it sends them: no parsing here */
	if (packet__parse(skb, &pi) != PACKET_TCP || pi.payload_len == 0)
		return 1;
	if (!state->scanning) {
		__u8 start[8] = {};

		len = pi.payload_len < sizeof(start) ? pi.payload_len : sizeof(start);
		if (bpf_skb_load_bytes(skb, pi.payload_off, start, len) != 0 || !enforce__request_start(start, len))
			return 1; /* a body, or a protocol that is not HTTP */
		if (state->sender == SENDER_UNKNOWN) {
			state->sender = enforce__checked_at_sender(skb, &pi) ? SENDER_CHECKED : SENDER_UNCHECKED;
			if (state->sender == SENDER_CHECKED)
				return 1;
		}
	}
	len = pi.payload_len < SCAN_MAX ? pi.payload_len : SCAN_MAX;
	scratch = credential_scratch(SCAN_RECEIVER);
	if (!scratch || bpf_skb_load_bytes(skb, pi.payload_off, scratch->bytes, len) != 0)
		return 1;
	s = &scratch->s;
	credential_scan_init(s, config, true, len);
	if (state->scanning) {
		s->hash = state->hash;
		s->partial = state->partial;
		s->wlen = state->wlen;
		s->state = state->state;
		s->in_space = state->in_space;
	}
	credential_scan(SCAN_RECEIVER, len);
	state->scanning = !s->head_done && !s->found;
	state->hash = s->hash;
	state->partial = s->partial;
	state->wlen = s->wlen;
	state->state = s->state;
	state->in_space = s->in_space;
	if (!s->found)
		return 1;
	counters = enforce__counters(s->rule_id);
	if (counters)
		counters->requests++;
	if (s->rule_flags & APIWARDEN_RULE_MONITOR)
		return 1;
	state->refused = 1;
	return SK_DROP;
}

SEC("cgroup_skb/ingress")
int apiwarden_enforce_ingress(struct __sk_buff *skb)
{
	if (enforce__packet(skb, APIWARDEN_DIR_INGRESS) == SK_DROP)
		return SK_DROP;
	return enforce__credential_ingress(skb);
}

/*
 * Remembers who opened each connection, for the packet and teardown decisions; while credential
 * rules exist, client sockets join the sockhash whose writes credential.bpf.c checks.
 */
SEC("sockops")
int apiwarden_enforce_sockops(struct bpf_sock_ops *skops)
{
	struct apiwarden_enforce_config *config;
	struct enforce_sock *state;
	struct bpf_sock *sk;
	__u8 role;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		role = APIWARDEN_ROLE_CLIENT;
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		role = APIWARDEN_ROLE_SERVER;
		break;
	default:
		return 1;
	}
	sk = skops->sk;
	if (!sk)
		return 1;
	state = bpf_sk_storage_get(&apiwarden_socket_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (state)
		state->role = role;
	config = enforce__config();
	if (role == APIWARDEN_ROLE_CLIENT && config && config->cred_rules) {
		__u64 cookie = bpf_get_socket_cookie(skops);

		bpf_sock_hash_update(skops, &apiwarden_enforce_sockhash, &cookie, BPF_NOEXIST);
	}
	return 1;
}

/*
 * Tears down the established connections the cut rules name (ECONNABORTED for the owner, a reset
 * for the peer). Run by the agent through an iterator after it installs a rule; prints nothing.
 */
SEC("iter/tcp")
int apiwarden_enforce_teardown(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct apiwarden_rule_counters *counters;
	struct apiwarden_cut_rule *rule;
	struct enforce_sock *state;
	__u8 remote[16], role;
	struct tcp_sock *tp;
	struct cgroup *cgrp;
	__u64 cgroup_id;
	__u16 port;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp || tp->inet_conn.icsk_inet.sk.__sk_common.skc_state == BPF_TCP_LISTEN)
		return 0;
	cgrp = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	if (!cgrp)
		return 0;
	state = bpf_sk_storage_get(&apiwarden_socket_state, (struct sock *)tp, 0, 0);
	if (state && state->refused) {
		/* A connection that carried a refused credential (enforce__credential_ingress). */
		bpf_sock_destroy(skc);
		return 0;
	}
	rule = enforce__cut_rule(CGROUP_STRUCT, cgrp, &cgroup_id);
	if (!rule)
		return 0;
	role = state ? state->role : APIWARDEN_ROLE_UNKNOWN;
	if (skc->skc_family == AF_INET)
		addr__set_v4_mapped(remote, skc->skc_daddr);
	else
		__builtin_memcpy(remote, &skc->skc_v6_daddr, 16);
	port = bpf_ntohs(skc->skc_dport);
	if (!enforce__packet_matches(rule, cgroup_id, role, remote, port))
		return 0;
	counters = enforce__counters(rule->rule_id);
	if (counters)
		counters->aborted++;
	if (!(rule->flags & APIWARDEN_RULE_MONITOR))
		bpf_sock_destroy(skc);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
