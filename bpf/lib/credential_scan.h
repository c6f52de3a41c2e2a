/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The request-head scan of the credential check: the last word of every header value, hashed
 * with the installation's key, looked up in apiwarden_cred_rules. The caller copies the bytes
 * into this CPU's scan buffer and runs credential_scan().
 */
#ifndef APIWARDEN_BPF_CREDENTIAL_SCAN_H
#define APIWARDEN_BPF_CREDENTIAL_SCAN_H

#include "enforce.h"

#define SCAN_MAX 8192 /* bytes of one write examined: a request head */

struct scan_buffer {
	__u8 bytes[SCAN_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scan_buffer);
} apiwarden_scan_buffers SEC(".maps") __weak;

enum scan_state {
	SCAN_LINE_START, /* at the first byte of a line */
	SCAN_NAME,       /* in a header name (or the request line) */
	SCAN_VALUE,      /* after the colon */
	SCAN_CR,         /* a CR at a line start: the head ends at the LF */
};

struct scan {
	__u64 key0, key1;
	__u64 filter;     /* apiwarden_enforce_config.cred_filter */
	struct scan_buffer *buffer; /* the bytes (this CPU's scan buffer) */
	__u64 hash;       /* of the current word */
	__u32 len;        /* bytes to scan */
	__u32 word_at;    /* offset of the 8-byte word scan__word passes to scan__byte */
	__u32 word_len;   /* bytes in the current word */
	__u8 state;       /* enum scan_state */
	__u8 in_space;    /* the last byte was a space or tab: the next byte starts a word */
	__u8 receiving;   /* the receiver's side: who sent it is unknown, so bind rules do not apply */
	__u8 head_done;   /* the scan stopped at the blank line that ends the head */
	struct apiwarden_cred_rule *found;
};

/* Whether the credential may pass: a bound one from its owner (the current task, at the sender). */
static __always_inline bool scan__allowed(const struct scan *s, const struct apiwarden_cred_rule *rule)
{
	if (!(rule->flags & APIWARDEN_RULE_BIND))
		return false;
	return s->receiving || bpf_get_current_ancestor_cgroup_id(rule->owner_level & (APIWARDEN_ENFORCE_MAX_LEVEL - 1)) ==
	       rule->owner_cgroup;
}

/* At the end of a header line: is its value's last word a refused credential? */
static __always_inline bool scan__line_end(struct scan *s)
{
	struct apiwarden_cred_rule *rule;
	__u64 hash;

	if (s->state != SCAN_VALUE || s->word_len == 0)
		return false;
	hash = apiwarden_cred_hash_finish(s->hash, s->key1);
	if (!(s->filter & (1ULL << (hash & 63))))
		return false;
	rule = bpf_map_lookup_elem(&apiwarden_cred_rules, &hash);
	if (!rule || !enforce__live(rule->expires_ns) || scan__allowed(s, rule))
		return false;
	s->found = rule;
	return true;
}

/* One byte of the head; 1: stop (a refused credential found, or the head ended). */
static __always_inline int scan__step(struct scan *s, __u8 c)
{
	if (c == '\n') {
		if (s->state == SCAN_CR) {
			s->head_done = 1; /* the blank line: end of the head */
			return 1;
		}
		if (scan__line_end(s))
			return 1;
		s->state = SCAN_LINE_START;
		return 0;
	}
	switch (s->state) {
	case SCAN_LINE_START:
		s->state = c == '\r' ? SCAN_CR : SCAN_NAME;
		return 0;
	case SCAN_CR:
		s->state = SCAN_NAME;
		return 0;
	case SCAN_NAME:
		if (c == ':') {
			s->state = SCAN_VALUE;
			s->word_len = 0;
			s->in_space = 1;
		}
		return 0;
	}
	/* SCAN_VALUE */
	if (c == '\r')
		return 0; /* the LF that follows ends the line */
	if (c == ' ' || c == '\t') {
		s->in_space = 1;
		return 0;
	}
	if (s->in_space) {
		s->hash = s->key0;
		s->word_len = 0;
		s->in_space = 0;
	}
	s->hash = apiwarden_cred_hash_step(s->hash, c);
	s->word_len++;
	return 0;
}

/* The byte at the word's offset k (scan__word's slow path), one bpf_loop step each. */
static long scan__byte(__u64 k, void *ctx)
{
	struct scan *s = ctx;
	__u32 i = s->word_at + k;

	if (i >= s->len || !s->buffer)
		return 1;
	return scan__step(s, s->buffer->bytes[i & (SCAN_MAX - 1)]);
}

#define SCAN_ONES 0x0101010101010101ULL
/* Whether any byte of w is c. */
static __always_inline bool scan__has(__u64 w, __u8 c)
{
	__u64 x = w ^ (SCAN_ONES * c);

	return ((x - SCAN_ONES) & ~x & (SCAN_ONES << 7)) != 0;
}

/*
 * Eight bytes per bpf_loop step: inside a header name (or the request line) a word without LF or
 * colon is skipped, inside a value a word without blanks or line ends is hashed at once; other
 * words go byte by byte.
 */
static long scan__word(__u64 index, void *ctx)
{
	struct scan *s = ctx;
	__u32 at = index * 8;
	__u64 w;

	if (at >= s->len || !s->buffer)
		return 1;
	if (at + 8 <= s->len) {
		w = *(__u64 *)&s->buffer->bytes[at & (SCAN_MAX - 8)];
		if (s->state == SCAN_NAME && !scan__has(w, '\n') && !scan__has(w, ':'))
			return 0;
		if (s->state == SCAN_VALUE && !scan__has(w, '\n') && !scan__has(w, '\r') && !scan__has(w, ' ') &&
		    !scan__has(w, '\t')) {
			if (s->in_space) {
				s->hash = s->key0;
				s->word_len = 0;
				s->in_space = 0;
			}
#pragma unroll
			for (int k = 0; k < 8; k++)
				s->hash = apiwarden_cred_hash_step(s->hash, (w >> (8 * k)) & 0xff); /* little-endian */
			s->word_len += 8;
			return 0;
		}
	}
	s->word_at = at;
	bpf_loop(8, scan__byte, s, 0);
	return s->found || s->head_done ? 1 : 0;
}

static __always_inline struct scan_buffer *credential_scan_buffer(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&apiwarden_scan_buffers, &zero);
}

/* A scan from the start of a request head. */
static __always_inline void credential_scan_init(struct scan *s, const struct apiwarden_enforce_config *config,
						 bool receiving)
{
	__builtin_memset(s, 0, sizeof(*s));
	s->key0 = config->hash_key[0];
	s->key1 = config->hash_key[1];
	s->filter = config->cred_filter;
	s->receiving = receiving;
	s->state = SCAN_NAME; /* the request line has no value to look at */
}

/* Scans the first len bytes of the buffer; s->found is the credential rule they present. */
static __always_inline void credential_scan(struct scan *s, struct scan_buffer *buffer, __u32 len)
{
	s->len = len;
	s->buffer = buffer;
	bpf_loop((len + 7) / 8, scan__word, s, 0);
}

#endif
