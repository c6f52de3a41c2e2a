// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * cgroup_skb ingress/egress: copies the payload of HTTP (and TLS handshake) segments of every TCP
 * socket in the monitored cgroup subtree, and names the socket of TLS library calls in progress
 * (lib/tls.h). Observe-only: always passes the packet.
 */
#include "../lib/classify.h"
#include "../lib/conn.h"
#include "../lib/tls.h"

static __always_inline int capture(struct __sk_buff *skb, __u8 direction)
{
	struct packet_info pi = {};
	struct apiwarden_sock_state *state;
	struct bpf_sock *sk;

	switch (packet__parse(skb, &pi)) {
	case PACKET_TCP:
		break;
	case PACKET_UNPARSED:
		stats__inc(APIWARDEN_STAT_UNPARSED);
		return SK_PASS;
	default:
		return SK_PASS;
	}
	sk = skb->sk;
	if (!sk)
		return SK_PASS;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return SK_PASS;
	if (pi.fin) {
		state = bpf_sk_storage_get(&apiwarden_sock_states, sk, 0, 0);
		if (state)
			conn__note_fin(state, pi.seq, pi.payload_len, direction);
	}
	if (pi.payload_len == 0)
		return SK_PASS;

	state = bpf_sk_storage_get(&apiwarden_sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state) {
		/* Cannot classify: copy rather than go blind. */
		stats__inc(APIWARDEN_STAT_LOST_MAP_FULL);
		events__payload(skb, &pi, direction, APIWARDEN_ROLE_UNKNOWN);
		return SK_PASS;
	}
	bool wanted = classify__wants(skb, &pi, state, direction);

	if (state->proto == APIWARDEN_PROTO_TLS && direction == APIWARDEN_DIR_EGRESS)
		tls__note_egress(skb, &pi, state->role);
	if (!wanted) {
		stats__inc(APIWARDEN_STAT_SKIPPED_OPAQUE);
		return SK_PASS;
	}
	events__payload(skb, &pi, direction, state->role);
	return SK_PASS;
}

SEC("cgroup_skb/egress")
int apiwarden_capture_egress(struct __sk_buff *skb)
{
	return capture(skb, APIWARDEN_DIR_EGRESS);
}

SEC("cgroup_skb/ingress")
int apiwarden_capture_ingress(struct __sk_buff *skb)
{
	return capture(skb, APIWARDEN_DIR_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
