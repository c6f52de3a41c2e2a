/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Maps shared by every apiwarden program. Defined __weak so each .bpf.c can include this header
 * and the BPF linker merges them into one object.
 */
#ifndef APIWARDEN_BPF_MAPS_H
#define APIWARDEN_BPF_MAPS_H

#include "common.h"
#include "sock_state.h"

/* Records to user space. Size set by the loader (--ringbuf-mib). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} apiwarden_events SEC(".maps") __weak;

/* enum apiwarden_stat counters, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, APIWARDEN_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} apiwarden_stats SEC(".maps") __weak;

/* Per-socket state, freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct apiwarden_sock_state);
} apiwarden_sock_states SEC(".maps") __weak;

#endif
