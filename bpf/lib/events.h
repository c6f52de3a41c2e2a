/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Building and submitting records. Every failed submit is counted where it happens. */
#ifndef APIWARDEN_BPF_EVENTS_H
#define APIWARDEN_BPF_EVENTS_H

#include "maps.h"
#include "packet.h"
#include "stats.h"

static __always_inline void events__header(struct apiwarden_record_header *hdr, __u16 type, __u32 length)
{
	hdr->type = type;
	hdr->version = APIWARDEN_ABI_VERSION;
	hdr->length = length;
	hdr->ts_ns = bpf_ktime_get_ns();
}

/* The socket of a packet, as its owner sees it. */
static __always_inline void events__flow(struct __sk_buff *skb, const struct packet_info *pi, __u8 direction,
					 __u8 role, struct apiwarden_flow *flow)
{
	flow->cgroup_id = bpf_skb_cgroup_id(skb);
	flow->cookie = bpf_get_socket_cookie(skb);
	flow->family = pi->family;
	flow->role = role;
	flow->pad0 = 0;
	if (direction == APIWARDEN_DIR_EGRESS) {
		__builtin_memcpy(flow->local_addr, pi->saddr, 16);
		__builtin_memcpy(flow->remote_addr, pi->daddr, 16);
		flow->local_port = pi->sport;
		flow->remote_port = pi->dport;
	} else {
		__builtin_memcpy(flow->local_addr, pi->daddr, 16);
		__builtin_memcpy(flow->remote_addr, pi->saddr, 16);
		flow->local_port = pi->dport;
		flow->remote_port = pi->sport;
	}
}

/*
 * Payload records are reserved straight in the ring buffer, with room for `cap` bytes: no shared
 * scratch buffer, so a softirq that interrupts a task-context program on this CPU cannot mix two
 * records. cap must be a constant (bpf_ringbuf_reserve needs one): callers pick a size class, copy
 * the bytes in after the struct, set the flow, and submit.
 */
static __always_inline struct apiwarden_payload_event *events__reserve_payload(const __u32 cap)
{
	struct apiwarden_payload_event *ev = bpf_ringbuf_reserve(&apiwarden_events, sizeof(*ev) + cap, 0);

	if (!ev)
		stats__inc(APIWARDEN_STAT_LOST_RINGBUF);
	return ev;
}

static __always_inline void events__submit_payload(struct apiwarden_payload_event *ev, __u32 seq, __u32 payload_len,
						   __u32 len, __u8 direction, __u8 flags)
{
	events__header(&ev->hdr, APIWARDEN_RECORD_PAYLOAD, sizeof(*ev) + len);
	ev->seq = seq;
	ev->payload_len = payload_len;
	ev->captured_len = len;
	ev->direction = direction;
	ev->flags = flags;
	ev->pad0 = 0;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	stats__inc(APIWARDEN_STAT_RECORDS);
}

/* One segment's payload in a record of size class `cap`. */
static __always_inline void events__payload_class(struct __sk_buff *skb, const struct packet_info *pi,
						  __u8 direction, __u8 role, __u32 len, __u8 flags, const __u32 cap)
{
	struct apiwarden_payload_event *ev;

	if (len > cap)
		len = cap;
	ev = events__reserve_payload(cap);
	if (!ev)
		return;
	if (bpf_skb_load_bytes(skb, pi->payload_off, (void *)(ev + 1), len)) {
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		stats__inc(APIWARDEN_STAT_UNPARSED);
		return;
	}
	events__flow(skb, pi, direction, role, &ev->flow);
	events__submit_payload(ev, pi->seq, pi->payload_len, len, direction, flags);
}

/* Copies the segment's payload (up to APIWARDEN_CAPTURE_MAX bytes) into one payload record. */
static __always_inline void events__payload(struct __sk_buff *skb, const struct packet_info *pi,
					    __u8 direction, __u8 role)
{
	__u32 len = pi->payload_len;
	__u8 flags = 0;

	if (len > APIWARDEN_CAPTURE_MAX) {
		len = APIWARDEN_CAPTURE_MAX;
		flags = APIWARDEN_PAYLOAD_TRUNCATED;
		stats__inc(APIWARDEN_STAT_LOST_TRUNCATED);
	}
	/* Size classes: a typical request or response head takes a 256-byte slot, so the ring holds
	 * more records (and rides out longer stalls of the agent) than with one large class. */
	if (len <= 256)
		events__payload_class(skb, pi, direction, role, len, flags, 256);
	else if (len <= 1024)
		events__payload_class(skb, pi, direction, role, len, flags, 1024);
	else if (len <= 4096)
		events__payload_class(skb, pi, direction, role, len, flags, 4096);
	else
		events__payload_class(skb, pi, direction, role, len, flags, APIWARDEN_CAPTURE_MAX);
}

#endif
