/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Connection lifecycle records from sock_ops. */
#ifndef APIWARDEN_BPF_CONN_H
#define APIWARDEN_BPF_CONN_H

#include "events.h"

/* The socket's cgroup. bpf_sk_cgroup_id is refused in sock_ops and the current task is wrong
 * for passive opens (softirq) and closes, so read it from the socket itself. */
static __always_inline __u64 conn__cgroup_id(struct bpf_sock *sk)
{
	struct tcp_sock *tp;

	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	return BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup, kn, id);
}

static __always_inline void conn__flow(struct bpf_sock_ops *skops, struct bpf_sock *sk,
				       struct apiwarden_flow *flow, __u8 role)
{
	flow->cgroup_id = conn__cgroup_id(sk);
	flow->cookie = bpf_get_socket_cookie(skops);
	flow->family = skops->family;
	flow->role = role;
	flow->pad0 = 0;
	flow->local_port = skops->local_port;
	flow->remote_port = bpf_ntohl(skops->remote_port);
	if (skops->family == AF_INET) {
		addr__set_v4_mapped(flow->local_addr, skops->local_ip4);
		addr__set_v4_mapped(flow->remote_addr, skops->remote_ip4);
	} else {
		__u32 *local = (__u32 *)flow->local_addr, *remote = (__u32 *)flow->remote_addr;

		local[0] = skops->local_ip6[0];
		local[1] = skops->local_ip6[1];
		local[2] = skops->local_ip6[2];
		local[3] = skops->local_ip6[3];
		remote[0] = skops->remote_ip6[0];
		remote[1] = skops->remote_ip6[1];
		remote[2] = skops->remote_ip6[2];
		remote[3] = skops->remote_ip6[3];
	}
}

/*
 * tcp_sock's bytes_acked and bytes_received count sequence space: the SYN and an acknowledged FIN
 * (sent), and a FIN (received), each take one. The records promise payload bytes, so take them out.
 */
static __always_inline void conn__payload_bytes(struct bpf_sock_ops *skops, const struct apiwarden_sock_state *state,
						__u64 *sent, __u64 *received)
{
	__u64 syn = state && state->established_ns ? state->bytes_acked0 : 1;
	__u64 fin_acked = state && state->fin_sent && skops->snd_una == state->fin_seq + 1;
	__u64 fin_received = state && state->fin_received;

	*sent = skops->bytes_acked > syn + fin_acked ? skops->bytes_acked - syn - fin_acked : 0;
	*received = skops->bytes_received > fin_received ? skops->bytes_received - fin_received : 0;
}

/* Called by the packet programs for every FIN, so close can account for it. */
static __always_inline void conn__note_fin(struct apiwarden_sock_state *state, __u32 seq, __u32 payload_len,
					   __u8 direction)
{
	if (direction == APIWARDEN_DIR_EGRESS) {
		state->fin_seq = seq + payload_len;
		state->fin_sent = 1;
	} else {
		state->fin_received = 1;
	}
}

static __always_inline void conn__submit(struct bpf_sock_ops *skops, struct bpf_sock *sk, __u16 type,
					 __u8 role, const struct apiwarden_sock_state *state)
{
	struct apiwarden_conn_event *ev = bpf_ringbuf_reserve(&apiwarden_events, sizeof(*ev), 0);

	if (!ev) {
		stats__inc(APIWARDEN_STAT_LOST_RINGBUF);
		return;
	}
	events__header(&ev->hdr, type, sizeof(*ev));
	conn__flow(skops, sk, &ev->flow, role);
	conn__payload_bytes(skops, state, &ev->bytes_sent, &ev->bytes_received);
	ev->duration_ns = state && state->established_ns ? ev->hdr.ts_ns - state->established_ns : 0;
	ev->srtt_us = skops->srtt_us >> 3; /* the kernel keeps it scaled by 8 */
	ev->total_retrans = skops->total_retrans;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	stats__inc(APIWARDEN_STAT_RECORDS);
}

static __always_inline void conn__established(struct bpf_sock_ops *skops, __u8 role)
{
	struct bpf_sock *sk = skops->sk;
	struct apiwarden_sock_state *state;

	if (!sk)
		return;
	state = bpf_sk_storage_get(&apiwarden_sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state) {
		stats__inc(APIWARDEN_STAT_LOST_MAP_FULL);
	} else {
		state->role = role;
		state->established_ns = bpf_ktime_get_ns();
		state->bytes_acked0 = skops->bytes_acked;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	conn__submit(skops, sk, APIWARDEN_RECORD_CONN_OPEN, role, NULL);
}

static __always_inline void conn__closed(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct apiwarden_sock_state *state;

	if (!sk)
		return;
	state = bpf_sk_storage_get(&apiwarden_sock_states, sk, 0, 0);
	conn__submit(skops, sk, APIWARDEN_RECORD_CONN_CLOSE, state ? state->role : APIWARDEN_ROLE_UNKNOWN, state);
}

#endif
