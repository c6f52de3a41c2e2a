/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The request-head scan of the credential check: the last word of every header value, hashed
 * with the installation's key, looked up in apiwarden_cred_rules. The caller copies the bytes
 * into its slot of this CPU's scratch (credential_scratch), sets it up with credential_scan_init
 * and runs credential_scan().
 */
#ifndef APIWARDEN_BPF_CREDENTIAL_SCAN_H
#define APIWARDEN_BPF_CREDENTIAL_SCAN_H

#include "enforce.h"

#define SCAN_MAX 8192 /* bytes of one write examined: a request head */

enum scan_state {
	SCAN_LINE_START, /* at the first byte of a line */
	SCAN_NAME,       /* in a header name (or the request line) */
	SCAN_VALUE,      /* after the colon */
	SCAN_CR,         /* a CR at a line start: the head ends at the LF */
};

struct scan {
	__u64 key0, key1;
	__u64 filter;     /* apiwarden_enforce_config.cred_filter */
	__u64 hash;       /* of the current word's whole 64-bit words (apiwarden_cred_hash_word) */
	__u64 partial;    /* the bytes after them, wlen % 8 of them, little-endian */
	__u32 len;        /* bytes to scan */
	__u32 at;         /* offset of the next byte */
	__u32 wlen;       /* bytes in the current word */
	__u8 state;       /* enum scan_state */
	__u8 in_space;    /* the last byte was a space or tab: the next byte starts a word */
	__u8 receiving;   /* the receiver's side: who sent it is unknown, so bind rules do not apply */
	__u8 head_done;   /* the scan stopped at the blank line that ends the head */
	__u8 found;       /* it stopped at a refused credential: the rule's id and flags follow */
	__u8 pad[3];
	__u32 rule_id;
	__u32 rule_flags;
};

/* A scan and its bytes. */
struct scan_scratch {
	struct scan s;
	__u8 bytes[SCAN_MAX];
};

/*
 * Per CPU, one slot for each side: the sender's scan (sk_msg, in the writing task) can be
 * interrupted on its CPU by the receiver's (cgroup_skb ingress, in softirq). In a map rather than
 * on the stack because the verifier does not follow what a map holds: it checks a scan step once,
 * not once for every combination of scan states it could tell apart on the stack. Named anew when
 * struct scan changes size (apiwarden_scan_scratch before hash version 2): a pinned map of
 * another size is not reused, and the loader removes the old name's pin.
 */
enum scan_slot {
	SCAN_SENDER = 0,
	SCAN_RECEIVER = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct scan_scratch);
} apiwarden_scan_slots SEC(".maps") __weak;

static __always_inline struct scan_scratch *credential_scratch(__u32 slot)
{
	return bpf_map_lookup_elem(&apiwarden_scan_slots, &slot);
}

/* Whether the credential may pass: a bound one from its owner (the current task, at the sender). */
static __always_inline bool scan__allowed(const struct scan *s, const struct apiwarden_cred_rule *rule)
{
	if (!(rule->flags & APIWARDEN_RULE_BIND))
		return false;
	return s->receiving || bpf_get_current_ancestor_cgroup_id(rule->owner_level & (APIWARDEN_ENFORCE_MAX_LEVEL - 1)) ==
	       rule->owner_cgroup;
}

/* Adds k (1 to 8) bytes, little-endian in b with zeros above, to the current word. */
static __always_inline void scan__append(struct scan *s, __u64 b, __u32 k)
{
	__u32 p = s->wlen & 7;
	__u64 partial = s->partial | b << (8 * p);

	if (p + k >= 8) {
		s->hash = apiwarden_cred_hash_word(s->hash, partial);
		partial = (b >> (8 * (7 - p))) >> 8; /* the bytes that did not fit: none when p is 0 */
	}
	s->partial = partial;
	s->wlen += k;
}

/* At the end of a header line: is its value's last word a refused credential? */
static __always_inline bool scan__line_end(struct scan *s)
{
	struct apiwarden_cred_rule *rule;
	__u64 hash;

	if (s->state != SCAN_VALUE || s->wlen == 0)
		return false;
	hash = s->hash;
	if (s->wlen & 7)
		hash = apiwarden_cred_hash_word(hash, s->partial);
	hash = apiwarden_cred_hash_finish(hash, s->wlen, s->key1);
	if (!(s->filter & (1ULL << (hash & 63))))
		return false;
	rule = bpf_map_lookup_elem(&apiwarden_cred_rules, &hash);
	if (!rule || !enforce__live(rule->expires_ns) || scan__allowed(s, rule))
		return false;
	s->found = 1;
	s->rule_id = rule->rule_id;
	s->rule_flags = rule->flags;
	return true;
}

/* A new word starts at the next byte of a value. */
static __always_inline void scan__word_start(struct scan *s)
{
	s->hash = s->key0;
	s->partial = 0;
	s->wlen = 0;
	s->in_space = 0;
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
			s->wlen = 0;
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
	if (s->in_space)
		scan__word_start(s);
	scan__append(s, c, 1);
	return 0;
}

#define SCAN_ONES 0x0101010101010101ULL
#define SCAN_LOW7 0x7f7f7f7f7f7f7f7fULL

/* Bit 7 of each byte of w that is c, exactly (no false positives: the positions are used). */
static __always_inline __u64 scan__eq(__u64 w, __u8 c)
{
	__u64 x = w ^ (SCAN_ONES * c);

	return ~(((x & SCAN_LOW7) + SCAN_LOW7) | x | SCAN_LOW7);
}

/* Bit 7 of each byte of w below c (c <= 0x80), exactly. */
static __always_inline __u64 scan__below(__u64 w, __u8 c)
{
	return ~(((w & SCAN_LOW7) + SCAN_ONES * (0x80 - c)) | w | SCAN_LOW7);
}

/* Index of the lowest byte whose bit 7 is set in m (m != 0): its lowest bit, times a constant
 * whose byte 7-k is k, leaves k in the top byte. */
static __always_inline __u32 scan__first(__u64 m)
{
	return (((m & -m) >> 7) * 0x0001020304050607ULL) >> 56;
}

/* Eight bytes from at (< SCAN_MAX), little-endian: byte k at bits 8k. Near the buffer's end the
 * last eight are read and shifted down. One unaligned load (x86 allows it), not eight byte loads:
 * through an integer, clang does not see the byte array's alignment. */
static __always_inline __u64 scan__load(const struct scan_scratch *scratch, __u32 at)
{
	__u32 off = at > SCAN_MAX - 8 ? SCAN_MAX - 8 : at;

	if (off > SCAN_MAX - 8)
		return 0; /* never: the bound, spelt out for the verifier */
	return *(__u64 *)((long)scratch->bytes + off) >> (8 * (at - off));
}

#define SCAN_RUN 8 /* rounds of scan__value_run: 128 bytes */

/*
 * Inside a value's word, aligned (eight bytes at a time from its first byte on): sixteen bytes per
 * round, as two words, for as long as they hold no delimiter. A long token (a JWT) goes through
 * here; its start and end go through scan__stretch. Not inlined: a call verifies once, where each
 * way out of an inlined loop would be followed on through the rest of the scan.
 */
static __noinline void scan__value_run(struct scan_scratch *scratch)
{
	struct scan *s = &scratch->s;
	__u32 at = s->at, len = s->len;
	__u64 hash = s->hash, a, b;

#pragma unroll
	for (int i = 0; i < SCAN_RUN; i++) {
		if (at + 16 > len)
			break;
		a = scan__load(scratch, at);
		b = scan__load(scratch, at + 8);
		if (scan__below(a, '!') | scan__below(b, '!'))
			break;
		hash = apiwarden_cred_hash_word(apiwarden_cred_hash_word(hash, a), b);
		at += 16;
	}
	s->wlen += at - s->at;
	s->hash = hash;
	s->at = at;
}

/*
 * One stretch of the head: the bytes up to the next byte that can change the scan's state (at
 * most eight, found with the masks above) are skipped inside a header name or added to the word
 * inside a value, then that byte goes through scan__step. Eight bytes of a value with no
 * delimiter in the sixteen after them hand over to scan__value_run. 1: stop.
 */
static __always_inline int scan__stretch(struct scan_scratch *scratch)
{
	struct scan *s = &scratch->s;
	__u32 at, n, d;
	__u64 w, m;

	at = s->at;
	if (at >= s->len)
		return 1;
	w = scan__load(scratch, at);
	n = s->len - at < 8 ? s->len - at : 8;
	switch (s->state) {
	case SCAN_NAME:
		m = scan__eq(w, '\n') | scan__eq(w, ':');
		break;
	case SCAN_VALUE:
		m = scan__below(w, '!'); /* blanks, CR, LF (other control bytes go through scan__step too) */
		break;
	default: /* a line's first byte */
		m = 0x80;
	}
	if (n < 8)
		m &= (1ULL << (8 * n)) - 1;
	d = m ? scan__first(m) : n;
	if (d > 0 && s->state == SCAN_VALUE) {
		if (s->in_space)
			scan__word_start(s);
		scan__append(s, w & (((1ULL << (8 * d - 1)) << 1) - 1), d);
	}
	if (d == n) {
		s->at = at + d;
		/* eight bytes of a word, and sixteen more without a delimiter: a long one */
		if (d == 8 && s->state == SCAN_VALUE && !(s->wlen & 7) && at + 24 <= s->len &&
		    !(scan__below(scan__load(scratch, at + 8), '!') | scan__below(scan__load(scratch, at + 16), '!')))
			scan__value_run(scratch);
		return 0;
	}
	s->at = at + d + 1;
	return scan__step(s, (w >> (8 * d)) & 0xff);
}

/* Two stretches per bpf_loop step: most are short (a line's end, its first byte, a colon). */
static long scan__steps(__u64 index, void *ctx)
{
	struct scan_scratch *scratch = credential_scratch(*(__u32 *)ctx);

	if (!scratch || scan__stretch(scratch))
		return 1;
	return scan__stretch(scratch);
}

/* A scan of len bytes from the start of a request head. */
static __always_inline void credential_scan_init(struct scan *s, const struct apiwarden_enforce_config *config,
						 bool receiving, __u32 len)
{
	__builtin_memset(s, 0, sizeof(*s));
	s->key0 = config->hash_key[0];
	s->key1 = config->hash_key[1];
	s->filter = config->cred_filter;
	s->receiving = receiving;
	s->len = len;
	s->state = SCAN_NAME; /* the request line has no value to look at */
}

/* Scans the slot's bytes; its s.found says whether they present a refused credential. */
static __always_inline void credential_scan(__u32 slot, __u32 len)
{
	bpf_loop(len, scan__steps, &slot, 0); /* each step moves on at least one byte */
}

#endif
