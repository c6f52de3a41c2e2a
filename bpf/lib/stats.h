/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef APIWARDEN_BPF_STATS_H
#define APIWARDEN_BPF_STATS_H

#include "maps.h"

static __always_inline void stats__inc(enum apiwarden_stat stat)
{
	__u32 key = stat;
	__u64 *value = bpf_map_lookup_elem(&apiwarden_stats, &key);

	if (value)
		*value += 1; /* per-CPU slot: no atomics needed */
}

#endif
