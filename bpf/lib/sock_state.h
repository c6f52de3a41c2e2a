/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Per-socket state kept in socket local storage. Kernel-only: user space never reads it. */
#ifndef APIWARDEN_BPF_SOCK_STATE_H
#define APIWARDEN_BPF_SOCK_STATE_H

enum apiwarden_proto {
	APIWARDEN_PROTO_UNKNOWN = 0, /* no payload classified yet */
	APIWARDEN_PROTO_HTTP = 1,    /* HTTP/1.x: every payload segment is copied */
	APIWARDEN_PROTO_TLS = 2,     /* TLS: the first APIWARDEN_TLS_SEGMENTS per direction are copied */
	APIWARDEN_PROTO_OPAQUE = 3,  /* anything else: nothing is copied */
};

struct apiwarden_sock_state {
	__u64 established_ns; /* 0 when the connection predates the agent */
	__u64 bytes_acked0;   /* tcp_sock bytes_acked at establishment: the SYN's sequence number */
	__u32 fin_seq;        /* sequence number of the FIN this socket sent */
	__u8 role;            /* enum apiwarden_role */
	__u8 proto;           /* enum apiwarden_proto */
	__u8 probes_used;     /* payload segments examined while still unclassified */
	__u8 tls_used[2];     /* TLS payload segments copied, per enum apiwarden_direction */
	__u8 fin_sent;        /* a FIN left this socket (fin_seq is valid) */
	__u8 fin_received;    /* a FIN arrived for this socket */
	__u8 pad[5];
};

#endif
