/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* IPv4/IPv6 + TCP header parsing for cgroup_skb programs (skb data starts at the IP header). */
#ifndef APIWARDEN_BPF_PACKET_H
#define APIWARDEN_BPF_PACKET_H

#include "common.h"

struct packet_info {
	__u8 saddr[16]; /* v4-mapped for IPv4 */
	__u8 daddr[16];
	__u16 sport;    /* host byte order */
	__u16 dport;
	__u16 family;
	__u32 seq;
	__u32 payload_off;
	__u32 payload_len;
	__u8 fin;       /* the FIN flag */
};

static __always_inline void addr__set_v4_mapped(__u8 out[16], __be32 v4)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &v4, 4);
}

enum packet_verdict {
	PACKET_TCP = 0,      /* parsed: a TCP segment */
	PACKET_OTHER = 1,    /* not TCP: not ours */
	PACKET_UNPARSED = 2, /* maybe TCP, but unreadable: short, fragment, bad lengths, IPv6 extension headers */
};

/* IPv6 extension headers that may stand between the fixed header and TCP. */
static __always_inline bool packet__ipv6_extension(__u8 nexthdr)
{
	return nexthdr == 0 || nexthdr == 43 || nexthdr == 44 || nexthdr == 51 || nexthdr == 60 || nexthdr == 135;
}

/* Fills pi from the skb's IP and TCP headers. */
static __always_inline enum packet_verdict packet__parse(struct __sk_buff *skb, struct packet_info *pi)
{
	struct tcphdr tcp;
	__u32 l4_off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return PACKET_UNPARSED;
		if (ip.protocol != IPPROTO_TCP)
			return PACKET_OTHER;
		if (ip.frag_off & bpf_htons(0x3fff) || ip.ihl < 5) /* a fragment, or a bogus header length */
			return PACKET_UNPARSED;
		l4_off = ip.ihl * 4;
		pi->family = AF_INET;
		addr__set_v4_mapped(pi->saddr, ip.saddr);
		addr__set_v4_mapped(pi->daddr, ip.daddr);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return PACKET_UNPARSED;
		if (ip6.nexthdr != IPPROTO_TCP) /* extension headers are rare on TCP: counted, not walked */
			return packet__ipv6_extension(ip6.nexthdr) ? PACKET_UNPARSED : PACKET_OTHER;
		l4_off = sizeof(ip6);
		pi->family = AF_INET6;
		__builtin_memcpy(pi->saddr, &ip6.saddr, 16);
		__builtin_memcpy(pi->daddr, &ip6.daddr, 16);
	} else {
		return PACKET_OTHER;
	}

	if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)) || tcp.doff < 5)
		return PACKET_UNPARSED;
	pi->sport = bpf_ntohs(tcp.source);
	pi->dport = bpf_ntohs(tcp.dest);
	pi->seq = bpf_ntohl(tcp.seq);
	pi->fin = tcp.fin;
	pi->payload_off = l4_off + tcp.doff * 4;
	/* skb->len, not the IP length: at cgroup hooks the kernel has trimmed link-layer padding. */
	pi->payload_len = skb->len > pi->payload_off ? skb->len - pi->payload_off : 0;
	return PACKET_TCP;
}

#endif
