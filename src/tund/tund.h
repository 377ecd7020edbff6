// podnet-tund: the tun backend's datapath (docs/tun.md). Shared declarations.
#ifndef PODNET_TUND_H
#define PODNET_TUND_H

#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define VNET_HDR_LEN 10
#define MAX_PKT 65535

// virtio_net_hdr (host byte order: TUNSETVNETLE is not needed on a little-endian host)
struct vnet_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
} __attribute__((packed));

struct prefix {
  int family; // 4 or 6
  uint8_t addr[16];
  int len;
};

struct peer {
  struct prefix subnet;
  struct sockaddr_storage sa; // underlay address and port
  socklen_t salen;
};

// Immutable once published: a reload builds a new table and swaps the pointer.
struct table {
  int npeers;
  struct peer *peers;
  int nlocals;
  struct prefix *locals;
};

// Counters: each is written by one thread (relaxed atomics) and read by the main thread.
struct stats {
  uint64_t tun_reads, tun_read_bytes, udp_sent_datagrams, udp_send_calls;
  uint64_t udp_recv_calls, udp_recv_datagrams, tun_writes, tun_write_bytes;
  uint64_t gso_superpackets, gro_coalesced;
  uint64_t drop_unknown_source, drop_inner_source, drop_inner_dest, drop_malformed;
  uint64_t no_peer_icmp, errors;
};

extern struct stats g_stats;
#define COUNT(field, n) __atomic_fetch_add(&g_stats.field, (uint64_t)(n), __ATOMIC_RELAXED)
#define READ(field) __atomic_load_n(&g_stats.field, __ATOMIC_RELAXED)

// A big-endian 16-bit field at any alignment (datagrams of odd sizes put headers anywhere).
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

// table.c
struct table *table_load(const char *path, int udp_family);
void table_free(struct table *t);
struct table *table_current(void);
void table_publish(struct table *t);
void table_reap(int min_age_ms);
const struct peer *table_route(const struct table *t, int family, const uint8_t *dst);
int table_is_local(const struct table *t, int family, const uint8_t *dst);
// Whether an inner source is inside the subnets of the node with this underlay address.
int table_source_ok(const struct table *t, const struct sockaddr_storage *from, int family, const uint8_t *src, int *known_sender);
int prefix_contains(const struct prefix *p, int family, const uint8_t *a);

// csum.c
uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t n);
uint16_t csum_fold(uint64_t sum);
uint64_t pseudo_sum(int family, const uint8_t *ip, uint8_t proto, uint32_t len);

// tx.c (TUN → UDP) and rx.c (UDP → TUN): thread bodies
struct dp {
  int tun;
  int udp;
  int udp_family;
  int gso_ok; // UDP_SEGMENT works on this socket
};
void *tx_loop(void *arg);
void *rx_loop(void *arg);

// icmp.c: an ICMP destination unreachable for `pkt`, written to the TUN device
void icmp_unreachable(int tun, const uint8_t *pkt, size_t len);

void fatal_exit(void) __attribute__((noreturn));
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
