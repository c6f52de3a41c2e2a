/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Which connections are worth copying: HTTP/1.x in full, TLS handshakes, nothing else. */
#ifndef APIWARDEN_BPF_CLASSIFY_H
#define APIWARDEN_BPF_CLASSIFY_H

#include "packet.h"
#include "sock_state.h"

/* Four bytes as the big-endian word they form on the wire: portable across host byte orders. */
#define WORD4(a, b, c, d) ((__u32)(a) << 24 | (__u32)(b) << 16 | (__u32)(c) << 8 | (__u32)(d))

/* Protocol of a stream from its first bytes: an HTTP/1.x request or response line, a TLS record. */
static __always_inline enum apiwarden_proto classify__prefix(const __u8 p[8])
{
	__u32 word;

	__builtin_memcpy(&word, p, 4);
	switch (bpf_ntohl(word)) {
	case WORD4('G', 'E', 'T', ' '):
	case WORD4('P', 'O', 'S', 'T'):
	case WORD4('P', 'U', 'T', ' '):
	case WORD4('H', 'E', 'A', 'D'):
	case WORD4('D', 'E', 'L', 'E'):
	case WORD4('P', 'A', 'T', 'C'):
	case WORD4('O', 'P', 'T', 'I'):
	case WORD4('T', 'R', 'A', 'C'):
	case WORD4('C', 'O', 'N', 'N'):
		return APIWARDEN_PROTO_HTTP;
	case WORD4('H', 'T', 'T', 'P'):
		return p[4] == '/' && p[5] == '1' ? APIWARDEN_PROTO_HTTP : APIWARDEN_PROTO_OPAQUE;
	}
	if (p[0] == 0x16 && p[1] == 0x03) /* TLS handshake record */
		return APIWARDEN_PROTO_TLS;
	return APIWARDEN_PROTO_OPAQUE;
}

/*
 * Decides whether this payload segment is copied, classifying the socket on its first payload.
 * A connection whose start we saw is classified by its first segment; one that predates the agent
 * may be mid-message, so it gets APIWARDEN_PROBE_SEGMENTS chances to show a message start.
 */
static __always_inline bool classify__wants(struct __sk_buff *skb, const struct packet_info *pi,
					    struct apiwarden_sock_state *state, __u8 direction)
{
	if (state->proto == APIWARDEN_PROTO_UNKNOWN) {
		__u8 prefix[8] = {};
		__u32 n = pi->payload_len < sizeof(prefix) ? pi->payload_len : sizeof(prefix);

		if (n < 4 || bpf_skb_load_bytes(skb, pi->payload_off, prefix, n))
			return false;
		state->proto = classify__prefix(prefix);
		if (state->proto == APIWARDEN_PROTO_OPAQUE && state->established_ns == 0 &&
		    ++state->probes_used < APIWARDEN_PROBE_SEGMENTS)
			state->proto = APIWARDEN_PROTO_UNKNOWN;
	}
	switch (state->proto) {
	case APIWARDEN_PROTO_HTTP:
		return true;
	case APIWARDEN_PROTO_TLS:
		if (state->tls_used[direction & 1] >= APIWARDEN_TLS_SEGMENTS)
			return false;
		state->tls_used[direction & 1]++;
		return true;
	default:
		return false;
	}
}

#endif
