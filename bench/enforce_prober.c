// The probe behind bench/enforce_latency.py: how soon a workload notices it has been cut.
//
//   enforce_prober listen
//       A TCP listener on 127.0.0.1 (an ephemeral port, printed on stdout) that accepts and closes
//       connections until killed. Run outside the cut workload.
//   enforce_prober probe TCP_PORT UDP_PORT LOG_FILE [MAX_SECONDS]
//       Run inside the workload's cgroup. A tight loop; each iteration
//         (a) connect()s to 127.0.0.1:TCP_PORT (a fresh socket, closed with a reset so no TIME_WAIT
//             piles up) and notes the CLOCK_MONOTONIC times around the first connect refused
//             with EPERM, and
//         (b) sends one datagram {seq} on a UDP socket connected to 127.0.0.1:UDP_PORT, noting its
//             send time and the send's errno.
//       Prints "ready" after a warm-up, then, once a connect has been refused and 200 more
//       iterations ran (or MAX_SECONDS passed), writes LOG_FILE (per datagram: u64 send time ns,
//       i32 errno, i32 pad) and prints one JSON line with the connect figures.
//
// Build: cc -O2 -o enforce_prober enforce_prober.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kReadyAfter = 500, kAfterRefusal = 200, kMaxDatagrams = 1 << 22 };

struct send_log {
	uint64_t sent_ns;
	int32_t error;
	int32_t pad;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int listen_mode(void)
{
	struct sockaddr_in a = loopback(0);
	socklen_t len = sizeof(a);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4096) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		perror("listen");
		return 1;
	}
	printf("%d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (c >= 0)
			close(c);
	}
}

static int probe_mode(int tcp_port, int udp_port, const char *log_path, double max_seconds)
{
	struct sockaddr_in tcp_addr = loopback(tcp_port), udp_addr = loopback(udp_port);
	struct linger reset = {.l_onoff = 1, .l_linger = 0};
	struct send_log *log = calloc(kMaxDatagrams, sizeof(*log));
	uint64_t first_refused_start = 0, first_refused_end = 0, last_ok_end = 0, loop_start, deadline;
	uint64_t ok = 0, other_failures = 0, other_at = 0, refused_at = 0, i;
	int other_errno = 0;
	int udp = socket(AF_INET, SOCK_DGRAM, 0);

	if (!log || udp < 0 || connect(udp, (struct sockaddr *)&udp_addr, sizeof(udp_addr))) {
		perror("udp");
		return 1;
	}
	loop_start = now_ns();
	deadline = loop_start + (uint64_t)(max_seconds * 1e9);
	for (i = 0; i < kMaxDatagrams; i++) {
		uint64_t start = now_ns(), end, sent;
		int fd = socket(AF_INET, SOCK_STREAM, 0), rc, err;
		uint32_t seq = (uint32_t)i;

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		rc = connect(fd, (struct sockaddr *)&tcp_addr, sizeof(tcp_addr));
		err = errno;
		end = now_ns();
		close(fd);
		if (rc == 0) {
			ok++;
			last_ok_end = end;
		} else if (err == EPERM) {
			if (!first_refused_end) {
				first_refused_start = start;
				first_refused_end = end;
				refused_at = i;
			}
		} else {
			if (!other_failures++)
				other_at = i;
			other_errno = err;
		}

		sent = now_ns();
		rc = (int)send(udp, &seq, sizeof(seq), 0);
		log[i].sent_ns = sent;
		log[i].error = rc < 0 ? errno : 0;

		if (i == kReadyAfter) {
			printf("ready\n");
			fflush(stdout);
		}
		if ((first_refused_end && i >= refused_at + kAfterRefusal) || sent > deadline) {
			i++;
			break;
		}
	}
	FILE *out = fopen(log_path, "wb");
	if (!out || fwrite(log, sizeof(*log), i, out) != i || fclose(out)) {
		perror(log_path);
		return 1;
	}
	printf("{\"iterations\": %llu, \"loop_start_ns\": %llu, \"loop_end_ns\": %llu, \"connects_ok\": %llu, "
	       "\"last_ok_connect_end_ns\": %llu, \"first_refused_start_ns\": %llu, \"first_refused_end_ns\": %llu, "
	       "\"refused_at_iteration\": %llu, \"other_failures\": %llu, \"first_other_iteration\": %llu, "
	       "\"other_errno\": %d}\n",
	       (unsigned long long)i, (unsigned long long)loop_start, (unsigned long long)now_ns(),
	       (unsigned long long)ok, (unsigned long long)last_ok_end, (unsigned long long)first_refused_start,
	       (unsigned long long)first_refused_end, (unsigned long long)refused_at,
	       (unsigned long long)other_failures, (unsigned long long)other_at, other_errno);
	fflush(stdout);
	free(log);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "listen"))
		return listen_mode();
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "probe"))
		return probe_mode(atoi(argv[2]), atoi(argv[3]), argv[4], argc == 6 ? atof(argv[5]) : 10.0);
	fprintf(stderr, "usage: %s listen | probe TCP_PORT UDP_PORT LOG_FILE [MAX_SECONDS]\n", argv[0]);
	return 2;
}
