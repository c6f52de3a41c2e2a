// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* sock_ops: connection open (client or server side) and close, with byte counts and duration. */
#include "../lib/conn.h"

SEC("sockops")
int apiwarden_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		conn__established(skops, APIWARDEN_ROLE_CLIENT);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		conn__established(skops, APIWARDEN_ROLE_SERVER);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			conn__closed(skops);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
