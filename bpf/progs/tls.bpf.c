// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The plaintext of TLS connections, from uprobes on OpenSSL's SSL_write/SSL_read (and the _ex
 * variants): the entry probe keeps the call's buffer per thread, the return probe copies the bytes
 * actually written or read into a payload record flagged APIWARDEN_PAYLOAD_TLS_PLAINTEXT.
 *
 * Which socket? The egress packet program names it when the thread sends a TLS record inside a
 * call (lib/tls.h); SSL_do_handshake is probed for that alone, since every session sends during its
 * handshake. The socket under each SSL object is then remembered for the calls that send nothing
 * (SSL_read). Only threads in the monitored cgroup subtree are followed.
 */
#include "../lib/tls.h"

#include <bpf/bpf_tracing.h>

struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad0;
};

/* The socket under one SSL object, and how many plaintext bytes went each way (the records' seq). */
struct ssl_session {
	struct apiwarden_flow flow;
	__u64 offset[2]; /* by enum apiwarden_direction */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, struct ssl_session);
} apiwarden_ssl_sessions SEC(".maps");

/* Slot 0: the monitored cgroup (set by user space). */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} apiwarden_scope SEC(".maps");

static __always_inline int ssl__enter(void *ssl, const void *buf, void *count_out)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct apiwarden_ssl_call call = {
		.ssl = (__u64)ssl,
		.buf = (__u64)buf,
		.count_out = (__u64)count_out,
	};

	if (bpf_current_task_under_cgroup(&apiwarden_scope, 0) != 1)
		return 0;
	bpf_map_update_elem(&apiwarden_ssl_calls, &id, &call, BPF_ANY);
	return 0;
}

/* The session of this call's SSL object, (re)bound to the socket the call sent on, if it sent. */
static __always_inline struct ssl_session *ssl__session(const struct apiwarden_ssl_call *call, __u32 tgid)
{
	struct ssl_key key = { .ssl = call->ssl, .tgid = tgid };
	struct ssl_session *session = bpf_map_lookup_elem(&apiwarden_ssl_sessions, &key);
	struct ssl_session fresh = {};

	if (!call->bound || (session && session->flow.cookie == call->flow.cookie))
		return session;
	/* A new SSL object, or one whose address was reused for another connection. */
	fresh.flow = call->flow;
	if (bpf_map_update_elem(&apiwarden_ssl_sessions, &key, &fresh, BPF_ANY))
		return NULL;
	return bpf_map_lookup_elem(&apiwarden_ssl_sessions, &key);
}

static __always_inline void ssl__emit_class(const struct ssl_session *session, const void *buf, __u64 count,
					    __u64 offset, __u8 direction, __u32 len, __u8 flags, const __u32 cap)
{
	struct apiwarden_payload_event *ev;

	barrier_var(len); /* keep the check: the verifier needs it even where the compiler proves it */
	if (len > cap)
		len = cap;
	ev = events__reserve_payload(cap);
	if (!ev)
		return;
	if (bpf_probe_read_user((void *)(ev + 1), len, buf)) {
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		stats__inc(APIWARDEN_STAT_LOST_TLS_PLAINTEXT);
		return;
	}
	ev->flow = session->flow;
	events__submit_payload(ev, (__u32)offset, count, len, direction, flags);
}

static __always_inline int ssl__exit(long ret, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct apiwarden_ssl_call *found = bpf_map_lookup_elem(&apiwarden_ssl_calls, &id);
	struct ssl_session *session;
	struct apiwarden_ssl_call call;
	__u64 count = 0, offset;
	__u8 flags = APIWARDEN_PAYLOAD_TLS_PLAINTEXT;
	__u32 len;

	if (!found)
		return 0;
	call = *found;
	bpf_map_delete_elem(&apiwarden_ssl_calls, &id);

	if (call.count_out) {
		if (ret != 1 || bpf_probe_read_user(&count, sizeof(count), (void *)call.count_out))
			count = 0;
	} else if (ret > 0) {
		count = ret;
	}
	session = ssl__session(&call, id >> 32);
	if (!count)
		return 0;
	if (!session) {
		stats__inc(APIWARDEN_STAT_LOST_TLS_PLAINTEXT);
		return 0;
	}
	offset = session->offset[direction & 1];
	session->offset[direction & 1] = offset + count;

	len = count > APIWARDEN_CAPTURE_MAX ? APIWARDEN_CAPTURE_MAX : count;
	if (len < count) {
		flags |= APIWARDEN_PAYLOAD_TRUNCATED;
		stats__inc(APIWARDEN_STAT_LOST_TRUNCATED);
	}
	if (len <= 256)
		ssl__emit_class(session, (void *)call.buf, count, offset, direction, len, flags, 256);
	else if (len <= 1024)
		ssl__emit_class(session, (void *)call.buf, count, offset, direction, len, flags, 1024);
	else if (len <= 4096)
		ssl__emit_class(session, (void *)call.buf, count, offset, direction, len, flags, 4096);
	else
		ssl__emit_class(session, (void *)call.buf, count, offset, direction, len, flags, APIWARDEN_CAPTURE_MAX);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(apiwarden_ssl_write, void *ssl, const void *buf, int num)
{
	return ssl__enter(ssl, buf, NULL);
}

SEC("uprobe")
int BPF_KPROBE(apiwarden_ssl_write_ex, void *ssl, const void *buf, size_t num, size_t *written)
{
	return ssl__enter(ssl, buf, written);
}

SEC("uretprobe")
int BPF_KRETPROBE(apiwarden_ssl_write_ret, long ret)
{
	return ssl__exit((int)ret, APIWARDEN_DIR_EGRESS);
}

SEC("uprobe")
int BPF_KPROBE(apiwarden_ssl_read, void *ssl, void *buf, int num)
{
	return ssl__enter(ssl, buf, NULL);
}

SEC("uprobe")
int BPF_KPROBE(apiwarden_ssl_read_ex, void *ssl, void *buf, size_t num, size_t *readbytes)
{
	return ssl__enter(ssl, buf, readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(apiwarden_ssl_read_ret, long ret)
{
	return ssl__exit((int)ret, APIWARDEN_DIR_INGRESS);
}

/* The handshake sends on the session's socket: reading it binds the session before any data. */
SEC("uprobe")
int BPF_KPROBE(apiwarden_ssl_do_handshake, void *ssl)
{
	return ssl__enter(ssl, NULL, NULL);
}

SEC("uretprobe")
int BPF_KRETPROBE(apiwarden_ssl_do_handshake_ret, long ret)
{
	return ssl__exit(0, APIWARDEN_DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
