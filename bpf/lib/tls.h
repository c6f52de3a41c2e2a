/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * TLS library calls in progress, shared by the OpenSSL uprobes (bpf/progs/tls.bpf.c) and the packet
 * programs. OpenSSL does not say which socket an SSL object runs over (curl's BIO has no fd at all),
 * but a TLS record the thread sends while inside SSL_do_handshake or SSL_write leaves through the
 * cgroup_skb egress program in that thread's context: that program names the socket.
 */
#ifndef APIWARDEN_BPF_TLS_H
#define APIWARDEN_BPF_TLS_H

#include "events.h"

/* One SSL_do_handshake/SSL_write/SSL_read call in progress on a thread. */
struct apiwarden_ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 count_out;            /* the _ex variants' size_t *written / *readbytes; 0 otherwise */
	struct apiwarden_flow flow; /* the socket a record of this call left by, once bound */
	__u8 bound;
	__u8 pad[7];
};

/* LRU: a thread that dies inside a call leaves its entry behind; the oldest such go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct apiwarden_ssl_call);
} apiwarden_ssl_calls SEC(".maps") __weak;

/*
 * Egress of a TLS socket: if the current thread is inside a TLS call, this is its socket. Only the
 * first packet binds; and the socket must belong to the thread's own cgroup, so a packet sent from
 * softirq (deferred transmission) on behalf of another socket is not taken for this call's.
 */
static __always_inline void tls__note_egress(struct __sk_buff *skb, const struct packet_info *pi, __u8 role)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct apiwarden_ssl_call *call = bpf_map_lookup_elem(&apiwarden_ssl_calls, &id);

	if (!call || call->bound || bpf_skb_cgroup_id(skb) != bpf_get_current_cgroup_id())
		return;
	events__flow(skb, pi, APIWARDEN_DIR_EGRESS, role, &call->flow);
	call->bound = 1;
}

#endif
