/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel <-> user-space contract of apiwarden: every struct that crosses the boundary
 * (ring-buffer records, map keys and values user space reads) is declared here and nowhere else.
 *
 * Rules: fixed-width __u* fields, explicit padding, sizes pinned by _Static_assert, enums are
 * append-only, every record starts with struct apiwarden_record_header. Included by BPF programs
 * (after vmlinux.h) and by C++ user space.
 */
#ifndef APIWARDEN_ABI_H
#define APIWARDEN_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define APIWARDEN_STATIC_ASSERT static_assert
#else
#define APIWARDEN_STATIC_ASSERT _Static_assert
#endif

#define APIWARDEN_ABI_VERSION 1

/* Payload bytes copied out of one TCP segment (or GSO super-segment); the rest is counted. */
#define APIWARDEN_CAPTURE_MAX 16384
/* Payload segments of a TLS connection copied per direction: enough for the handshake flights. */
#define APIWARDEN_TLS_SEGMENTS 4
/* Payload segments examined before a connection that never looked like HTTP or TLS is muted. */
#define APIWARDEN_PROBE_SEGMENTS 8

enum apiwarden_record_type {
	APIWARDEN_RECORD_PAYLOAD = 1,    /* struct apiwarden_payload_event + captured bytes */
	APIWARDEN_RECORD_CONN_OPEN = 2,  /* struct apiwarden_conn_event, at TCP established */
	APIWARDEN_RECORD_CONN_CLOSE = 3, /* struct apiwarden_conn_event, at TCP close */
};

enum apiwarden_direction {
	APIWARDEN_DIR_EGRESS = 0,  /* sent by the socket's owner */
	APIWARDEN_DIR_INGRESS = 1, /* received by the socket's owner */
};

enum apiwarden_role {
	APIWARDEN_ROLE_UNKNOWN = 0, /* connection predates the agent */
	APIWARDEN_ROLE_CLIENT = 1,  /* the socket's owner called connect() */
	APIWARDEN_ROLE_SERVER = 2,  /* the socket's owner accepted it */
};

/* Per-CPU counters (one array slot each). The LOST_* ones are losses; the rest are volume. */
enum apiwarden_stat {
	APIWARDEN_STAT_RECORDS = 0,       /* records written to the ring buffer */
	APIWARDEN_STAT_LOST_RINGBUF = 1,  /* records lost: ring buffer reserve/output failed */
	APIWARDEN_STAT_LOST_TRUNCATED = 2,/* segments whose payload exceeded APIWARDEN_CAPTURE_MAX */
	APIWARDEN_STAT_LOST_MAP_FULL = 3, /* socket state could not be created (map/storage full) */
	APIWARDEN_STAT_SKIPPED_OPAQUE = 4,/* payload segments of non-HTTP connections, not copied */
	APIWARDEN_STAT_UNPARSED = 5,      /* packets whose IP/TCP headers (or payload) could not be read */
	APIWARDEN_STAT_LOST_TLS_PLAINTEXT = 6, /* TLS plaintext not recorded: socket unknown or buffer unreadable */
	APIWARDEN_STAT_MAX = 7,
};

struct apiwarden_record_header {
	__u16 type;    /* enum apiwarden_record_type */
	__u16 version; /* APIWARDEN_ABI_VERSION */
	__u32 length;  /* bytes of the whole record, this header included; the ring-buffer slot may be
	                  larger (records are reserved in size classes): bytes past length are not part of it */
	__u64 ts_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_record_header) == 16, "abi: record header size");

/* One TCP socket as its owner sees it. IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d). */
struct apiwarden_flow {
	__u64 cgroup_id;       /* cgroup v2 id of the socket's owner */
	__u64 cookie;          /* socket cookie: unique per socket for the kernel's lifetime */
	__u8 local_addr[16];   /* network byte order */
	__u8 remote_addr[16];  /* network byte order */
	__u16 local_port;      /* host byte order */
	__u16 remote_port;     /* host byte order */
	__u16 family;          /* AF_INET (2) or AF_INET6 (10) of the packets */
	__u8 role;             /* enum apiwarden_role */
	__u8 pad0;
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_flow) == 56, "abi: flow size");

#define APIWARDEN_PAYLOAD_TRUNCATED 0x1 /* captured_len < payload_len */
/* Plaintext of a TLS connection read at the TLS library (SSL_write/SSL_read), not a TCP segment:
 * seq counts plaintext bytes of that direction from the first one seen, not TCP sequence space. */
#define APIWARDEN_PAYLOAD_TLS_PLAINTEXT 0x2

struct apiwarden_payload_event {
	struct apiwarden_record_header hdr;
	struct apiwarden_flow flow;
	__u32 seq;          /* TCP sequence number of the first payload byte */
	__u32 payload_len;  /* TCP payload bytes in the segment */
	__u32 captured_len; /* bytes that follow this struct */
	__u8 direction;     /* enum apiwarden_direction */
	__u8 flags;         /* APIWARDEN_PAYLOAD_* */
	__u16 pad0;
	/* followed by captured_len bytes of payload */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_payload_event) == 88, "abi: payload event size");

struct apiwarden_conn_event {
	struct apiwarden_record_header hdr;
	struct apiwarden_flow flow;
	__u64 bytes_sent;     /* payload bytes the peer acknowledged (tcp_sock bytes_acked) */
	__u64 bytes_received; /* payload bytes received (tcp_sock bytes_received) */
	__u64 duration_ns;    /* established -> this event; 0 when the start was not seen */
	__u32 srtt_us;        /* smoothed RTT, in microseconds */
	__u32 total_retrans;  /* segments retransmitted */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_conn_event) == 104, "abi: conn event size");

/*
 * Enforcement (bpf/progs/enforce.bpf.c, credential.bpf.c). User space fills the rule maps, pinned
 * under the agent's bpffs directory; the kernel refuses, drops and counts. Times are CLOCK_BOOTTIME
 * (bpf_ktime_get_boot_ns) so a rule expires on time even while no agent runs.
 */
#define APIWARDEN_ENFORCE_MAX_LEVEL 16   /* deepest cgroup level a rule can name (the root is 0) */
#define APIWARDEN_ENFORCE_MAX_RULES 4096 /* rule ids: slots of apiwarden_rule_counters */

enum apiwarden_rule_flags {
	APIWARDEN_RULE_EGRESS = 0x1,       /* connections the workload opens: refused, torn down, dropped */
	APIWARDEN_RULE_INGRESS = 0x2,      /* connections to the workload: torn down, dropped */
	APIWARDEN_RULE_MONITOR = 0x4,      /* count what would be refused, let it through */
	APIWARDEN_RULE_DESTINATIONS = 0x8, /* egress only towards apiwarden_cut_dests entries of this cgroup */
	APIWARDEN_RULE_BIND = 0x10,        /* credential rules: only owner_cgroup may present it */
};

/* apiwarden_cuts: cgroup v2 id (of any level) -> what is cut for it and every cgroup below it. */
struct apiwarden_cut_rule {
	__u64 expires_ns; /* CLOCK_BOOTTIME; 0: never */
	__u32 rule_id;    /* < APIWARDEN_ENFORCE_MAX_RULES */
	__u32 flags;      /* APIWARDEN_RULE_* */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_cut_rule) == 16, "abi: cut rule size");

/* apiwarden_cut_dests (LPM trie): the destinations of a DESTINATIONS rule. prefixlen counts the
 * bits of pad (32, always 0), cgroup_id (64) and the address's prefix (v4-mapped for IPv4). */
struct apiwarden_dest_key {
	__u32 prefixlen;
	__u32 pad;
	__u64 cgroup_id;
	__u8 addr[16]; /* network byte order */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_dest_key) == 32, "abi: dest key size");

struct apiwarden_dest_value {
	__u16 port; /* host byte order; 0: every port */
	__u16 pad;
	__u32 rule_id;
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_dest_value) == 8, "abi: dest value size");

/* apiwarden_cred_rules: keyed hash of a credential token (see apiwarden_cred_hash) -> rule. */
struct apiwarden_cred_rule {
	__u64 expires_ns;   /* CLOCK_BOOTTIME; 0: never */
	__u64 owner_cgroup; /* BIND: the cgroup (at owner_level) allowed to present the credential */
	__u32 owner_level;
	__u32 rule_id;
	__u32 flags;        /* APIWARDEN_RULE_MONITOR, APIWARDEN_RULE_BIND */
	__u32 pad;
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_cred_rule) == 32, "abi: credential rule size");

/* apiwarden_enforce_config, one slot. */
struct apiwarden_enforce_config {
	__u32 cut_levels;  /* bit L: some apiwarden_cuts entry names a cgroup at level L */
	__u32 cred_rules;  /* entries in apiwarden_cred_rules: 0 skips the request scan */
	__u64 hash_key[2]; /* key of the credential hash, random per installation */
	__u64 root_cgroup; /* the cgroup the programs are attached to, and its level */
	__u32 root_level;
	__u32 hash_version; /* APIWARDEN_CRED_HASH_VERSION of the hashes in apiwarden_cred_rules */
	__u64 cred_filter; /* bit (hash & 63) of every credential rule: most words skip the map lookup */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_enforce_config) == 48, "abi: enforce config size");

/* apiwarden_rule_counters, per CPU, one slot per rule id. Counted in both modes: a MONITOR rule's
 * counts are what it would have refused. */
struct apiwarden_rule_counters {
	__u64 connects;  /* connect() calls refused */
	__u64 packets;   /* packets dropped */
	__u64 aborted;   /* established connections torn down */
	__u64 requests;  /* writes (requests) carrying a revoked or foreign-bound credential refused */
};
APIWARDEN_STATIC_ASSERT(sizeof(struct apiwarden_rule_counters) == 32, "abi: rule counters size");

/*
 * The credential hash the kernel computes over a token in a request header, eight bytes at a
 * time: the token as little-endian 64-bit words (the last one zero-padded), each mixed into a state
 * seeded with hash_key[0] (one multiply and a rotation on the dependency chain per word: a byte-wise
 * hash costs a multiply per byte, a 750-byte JWT ~1 us), finished with the token's length and a
 * keyed murmur3 mix. It only has to match what user space computes for the same token under the
 * same random key; fingerprints (HMAC) stay in user space. Before version 2 (hash_version 0 in
 * the config) it was byte-wise FNV-1a.
 */
#define APIWARDEN_CRED_HASH_VERSION 2
static inline __u64 apiwarden_cred_hash_word(__u64 h, __u64 word)
{
	h ^= word * 0x9e3779b97f4a7c15ULL;
	h = (h << 31) | (h >> 33);
	return h * 0xc2b2ae3d27d4eb4fULL;
}
static inline __u64 apiwarden_cred_hash_finish(__u64 h, __u64 len, __u64 key1)
{
	h ^= key1 ^ len;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

#endif /* APIWARDEN_ABI_H */
