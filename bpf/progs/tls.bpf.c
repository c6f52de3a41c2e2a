// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The plaintext of TLS connections, from uprobes on OpenSSL's SSL_write/SSL_read (and the _ex
 * variants): the entry probe keeps the call's buffer per thread, the return probe copies the bytes
 * actually written or read into a payload record flagged APIWARDEN_PAYLOAD_TLS_PLAINTEXT.
 *
 * Which socket? OpenSSL does not say (curl's BIO has no fd at all), so the first read/write-family
 * syscall the thread makes inside the call names the fd, and the fd names the socket. The socket a
 * session runs over is remembered per SSL object, for calls OpenSSL serves from its own buffers.
 * Only threads in the monitored cgroup subtree are followed.
 */
#include "../lib/events.h"

#include <bpf/bpf_tracing.h>

#define S_IFMT 00170000
#define S_IFSOCK 0140000

#if defined(__TARGET_ARCH_x86)
enum { NR_read = 0, NR_write = 1, NR_readv = 19, NR_writev = 20, NR_sendto = 44, NR_recvfrom = 45,
       NR_sendmsg = 46, NR_recvmsg = 47 };
#elif defined(__TARGET_ARCH_arm64)
enum { NR_read = 63, NR_write = 64, NR_readv = 65, NR_writev = 66, NR_sendto = 206, NR_recvfrom = 207,
       NR_sendmsg = 211, NR_recvmsg = 212 };
#else
#error "syscall numbers for this architecture are missing"
#endif

/* One SSL_write/SSL_read call in progress on a thread. */
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 count_out; /* the _ex variants' size_t *written / *readbytes; 0 for the plain ones */
	__s32 fd;        /* of the first I/O syscall inside the call; -1 before it */
	__u32 pad0;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct ssl_call);
} apiwarden_ssl_calls SEC(".maps");

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
	struct ssl_call call = {
		.ssl = (__u64)ssl,
		.buf = (__u64)buf,
		.count_out = (__u64)count_out,
		.fd = -1,
	};

	if (bpf_current_task_under_cgroup(&apiwarden_scope, 0) != 1)
		return 0;
	bpf_map_update_elem(&apiwarden_ssl_calls, &id, &call, BPF_ANY);
	return 0;
}

/* The TCP socket behind a file descriptor of the current process, or NULL. */
static __always_inline struct sock *ssl__socket_of(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **files = BPF_CORE_READ(task, files, fdt, fd);
	unsigned int max_fds = BPF_CORE_READ(task, files, fdt, max_fds);
	struct socket *sock;
	struct file *file;

	if (fd < 0 || (unsigned int)fd >= max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &files[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(sock, sk);
}

/* The flow of a socket as the capture programs describe it; false unless it is TCP over IP. */
static __always_inline bool ssl__flow_of(struct sock *sk, struct apiwarden_flow *flow)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (!sk || (family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_type) != 1 /* SOCK_STREAM */)
		return false;
	flow->cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	/* Set by the packet programs' bpf_get_socket_cookie before any TLS record could be sent. */
	flow->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	flow->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	flow->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	flow->family = family;
	flow->role = APIWARDEN_ROLE_UNKNOWN; /* the connection's own records carry it */
	flow->pad0 = 0;
	if (family == AF_INET) {
		addr__set_v4_mapped(flow->local_addr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		addr__set_v4_mapped(flow->remote_addr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else {
		BPF_CORE_READ_INTO(&flow->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&flow->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	return flow->cookie != 0;
}

/* The session of this call's SSL object, (re)bound to the socket the call's syscall used. */
static __always_inline struct ssl_session *ssl__session(const struct ssl_call *call, __u32 tgid)
{
	struct ssl_key key = { .ssl = call->ssl, .tgid = tgid };
	struct ssl_session *session = bpf_map_lookup_elem(&apiwarden_ssl_sessions, &key);
	struct ssl_session fresh = {};
	struct sock *sk;

	if (call->fd < 0)
		return session;
	sk = ssl__socket_of(call->fd);
	if (!sk || !ssl__flow_of(sk, &fresh.flow))
		return session;
	if (session && session->flow.cookie == fresh.flow.cookie)
		return session;
	/* A new SSL object, or one whose address was reused for another connection. */
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
	ev = bpf_ringbuf_reserve(&apiwarden_events, sizeof(*ev) + cap, 0);
	if (!ev) {
		stats__inc(APIWARDEN_STAT_LOST_RINGBUF);
		return;
	}
	if (bpf_probe_read_user((void *)(ev + 1), len, buf)) {
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		stats__inc(APIWARDEN_STAT_LOST_TLS_PLAINTEXT);
		return;
	}
	events__header(&ev->hdr, APIWARDEN_RECORD_PAYLOAD, sizeof(*ev) + len);
	ev->flow = session->flow;
	ev->seq = (__u32)offset;
	ev->payload_len = count;
	ev->captured_len = len;
	ev->direction = direction;
	ev->flags = flags;
	ev->pad0 = 0;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	stats__inc(APIWARDEN_STAT_RECORDS);
}

static __always_inline int ssl__exit(long ret, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call *found = bpf_map_lookup_elem(&apiwarden_ssl_calls, &id);
	struct ssl_session *session;
	struct ssl_call call;
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
	if (len <= 512)
		ssl__emit_class(session, (void *)call.buf, count, offset, direction, len, flags, 512);
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

/* Names the fd of an SSL call in progress: the first read/write-family syscall inside it. */
SEC("raw_tracepoint/sys_enter")
int apiwarden_ssl_syscall(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = (long)ctx->args[1];
	struct ssl_call *call;
	__u64 id;

	if (nr != NR_read && nr != NR_write && nr != NR_sendto && nr != NR_recvfrom && nr != NR_sendmsg &&
	    nr != NR_recvmsg && nr != NR_readv && nr != NR_writev)
		return 0;
	id = bpf_get_current_pid_tgid();
	call = bpf_map_lookup_elem(&apiwarden_ssl_calls, &id);
	if (call && call->fd < 0)
		call->fd = (__s32)PT_REGS_PARM1_CORE_SYSCALL((struct pt_regs *)ctx->args[0]);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
