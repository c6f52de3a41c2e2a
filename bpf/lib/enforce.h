/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Enforcement maps and rule lookups, shared by enforce.bpf.c and credential.bpf.c. These maps are
 * pinned by the agent and outlive it; the capture programs never touch them.
 */
#ifndef APIWARDEN_BPF_ENFORCE_H
#define APIWARDEN_BPF_ENFORCE_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, APIWARDEN_ENFORCE_MAX_RULES);
	__type(key, __u64);
	__type(value, struct apiwarden_cut_rule);
} apiwarden_cuts SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct apiwarden_dest_key);
	__type(value, struct apiwarden_dest_value);
} apiwarden_cut_dests SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, APIWARDEN_ENFORCE_MAX_RULES);
	__type(key, __u64);
	__type(value, struct apiwarden_cred_rule);
} apiwarden_cred_rules SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct apiwarden_enforce_config);
} apiwarden_enforce_config SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, APIWARDEN_ENFORCE_MAX_RULES);
	__type(key, __u32);
	__type(value, struct apiwarden_rule_counters);
} apiwarden_rule_counters SEC(".maps") __weak;

enum enforce_sender {
	SENDER_UNKNOWN = 0,  /* not looked up yet */
	SENDER_CHECKED = 1,  /* a client socket of this node's subtree: sk_msg checks its writes */
	SENDER_UNCHECKED = 2,
};

/* Who opened a socket, from sock_ops: connections predating the programs have none. For server
 * sockets while credential rules exist, the receiving-side scan's state between segments. Its map
 * is named anew when the size changes (apiwarden_enforce_socks before hash version 2), as
 * apiwarden_scan_slots is. */
struct enforce_sock {
	__u64 hash;     /* scan state: the current word's hash */
	__u64 partial;  /* scan state: its bytes after the last whole 64-bit word */
	__u32 wlen;     /* scan state: its length */
	__u8 role;      /* enum apiwarden_role */
	__u8 refused;   /* a refused credential arrived: drop the rest, the agent resets it */
	__u8 scanning;  /* inside a request head that continues in the next segment */
	__u8 state;     /* scan state: enum scan_state */
	__u8 in_space;  /* scan state */
	__u8 sender;    /* enum enforce_sender: whether the peer's writes are checked at the sender */
	__u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct enforce_sock);
} apiwarden_socket_state SEC(".maps") __weak;

/* Client sockets whose writes the sk_msg program checks (credential.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} apiwarden_enforce_sockhash SEC(".maps") __weak;

static __always_inline struct apiwarden_enforce_config *enforce__config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&apiwarden_enforce_config, &zero);
}

static __always_inline bool enforce__live(__u64 expires_ns)
{
	return expires_ns == 0 || bpf_ktime_get_boot_ns() < expires_ns;
}

static __always_inline struct apiwarden_rule_counters *enforce__counters(__u32 rule_id)
{
	return bpf_map_lookup_elem(&apiwarden_rule_counters, &rule_id);
}

/* Where a cgroup id comes from: the current task, a packet's socket, or a struct cgroup. */
enum cgroup_source {
	CGROUP_CURRENT,
	CGROUP_SKB,
	CGROUP_STRUCT,
};

static __always_inline __u64 enforce__ancestor(enum cgroup_source source, void *ctx, int level)
{
	struct cgroup *cgrp, *ancestor = NULL;

	switch (source) {
	case CGROUP_CURRENT:
		return bpf_get_current_ancestor_cgroup_id(level);
	case CGROUP_SKB:
		return bpf_skb_ancestor_cgroup_id(ctx, level);
	case CGROUP_STRUCT:
		cgrp = ctx;
		if (level < 0 || level >= APIWARDEN_ENFORCE_MAX_LEVEL || level > BPF_CORE_READ(cgrp, level))
			return 0;
		bpf_core_read(&ancestor, sizeof(ancestor), &cgrp->ancestors[level]);
		return ancestor ? BPF_CORE_READ(ancestor, kn, id) : 0;
	}
	return 0;
}

/*
 * The live cut rule for the cgroup or one of its ancestors, outermost first; only the levels some
 * rule names are looked at, so with no rules this is one array lookup. *cgroup_id is the id the
 * rule is keyed by (for destination lookups).
 */
static __always_inline struct apiwarden_cut_rule *enforce__cut_rule(enum cgroup_source source, void *ctx,
								    __u64 *cgroup_id)
{
	struct apiwarden_enforce_config *config = enforce__config();
	struct apiwarden_cut_rule *rule;
	__u32 levels;

	if (!config || !config->cut_levels)
		return NULL;
	levels = config->cut_levels;
	for (int level = 1; level < APIWARDEN_ENFORCE_MAX_LEVEL; level++) {
		__u64 id;

		if (!(levels & (1u << level)))
			continue;
		id = enforce__ancestor(source, ctx, level);
		if (!id)
			break;
		rule = bpf_map_lookup_elem(&apiwarden_cuts, &id);
		if (rule && enforce__live(rule->expires_ns)) {
			*cgroup_id = id;
			return rule;
		}
	}
	return NULL;
}

/* Whether an egress rule applies to a connection towards addr:port (host byte order). */
static __always_inline bool enforce__egress_matches(const struct apiwarden_cut_rule *rule, __u64 cgroup_id,
						    const __u8 addr[16], __u16 port)
{
	struct apiwarden_dest_key key = {.prefixlen = 32 + 64 + 128, .cgroup_id = cgroup_id};
	struct apiwarden_dest_value *dest;

	if (!(rule->flags & APIWARDEN_RULE_EGRESS))
		return false;
	if (!(rule->flags & APIWARDEN_RULE_DESTINATIONS))
		return true;
	__builtin_memcpy(key.addr, addr, 16);
	dest = bpf_map_lookup_elem(&apiwarden_cut_dests, &key);
	return dest && (dest->port == 0 || dest->port == port);
}

#endif
