// The bench's naive reference forwarder for the tun backend (bench/tun.ts): what flannel's UDP
// backend does, one packet per system call. Thread 1: one read() from the TUN device, one
// sendto() to the peer; thread 2: one recvfrom() from the UDP socket, one write() to the device.
// No offloads, no batching, no source checks: it exists to be measured against podnet-tund.
//
// It attaches to the agent's podnet.tun (a vnet_hdr device, so IFF_TUN|IFF_NO_PI|IFF_VNET_HDR,
// a 10-byte virtio-net header skipped on read and emitted all-zero on write, TUNSETOFFLOAD 0 so
// the kernel never hands it a super-packet) and reads the peers file podnet-tund reads
// (docs/tun.md: `peer SUBNET ADDR PORT` lines; longest prefix on the inner destination).
//
//   naive-tun-forwarder --dev podnet.tun --listen 10.0.0.11 --port 8285 --peers FILE [--pidfile FILE]
//
// Built by the bench with `cc -O2 -pthread`. Exits 0 on SIGTERM/SIGINT.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define VNET_HDR 10
#define BUF 65536 + VNET_HDR

struct peer {
  int family;            // AF_INET / AF_INET6 (of the subnet)
  uint8_t net[16];
  int prefix;
  struct sockaddr_storage to;
  socklen_t tolen;
};

static struct peer peers[1024];
static int npeers;
static int tunfd, udpfd;

static void die(const char *what) {
  fprintf(stderr, "naive-tun-forwarder: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int prefix_match(const uint8_t *a, const uint8_t *net, int prefix) {
  int full = prefix / 8, rest = prefix % 8;
  if (memcmp(a, net, full) != 0) return 0;
  if (rest == 0) return 1;
  uint8_t m = (uint8_t)(0xff << (8 - rest));
  return (a[full] & m) == (net[full] & m);
}

static void load_peers(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  char line[512];
  while (fgets(line, sizeof line, f) && npeers < 1024) {
    char kind[16], subnet[128], addr[128];
    int port;
    if (sscanf(line, "%15s %127s %127s %d", kind, subnet, addr, &port) != 4 || strcmp(kind, "peer") != 0) continue;
    struct peer *p = &peers[npeers];
    memset(p, 0, sizeof *p);
    char *slash = strchr(subnet, '/');
    if (!slash) continue;
    *slash = 0;
    p->prefix = atoi(slash + 1);
    if (inet_pton(AF_INET, subnet, p->net) == 1) p->family = AF_INET;
    else if (inet_pton(AF_INET6, subnet, p->net) == 1) p->family = AF_INET6;
    else continue;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&p->to;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&p->to;
    if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
      s4->sin_family = AF_INET;
      s4->sin_port = htons(port);
      p->tolen = sizeof *s4;
    } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
      s6->sin6_family = AF_INET6;
      s6->sin6_port = htons(port);
      p->tolen = sizeof *s6;
    } else continue;
    npeers++;
  }
  fclose(f);
}

static struct peer *lookup(const uint8_t *pkt, size_t n) {
  int fam;
  const uint8_t *dst;
  if (n >= 20 && (pkt[0] >> 4) == 4) fam = AF_INET, dst = pkt + 16;
  else if (n >= 40 && (pkt[0] >> 4) == 6) fam = AF_INET6, dst = pkt + 24;
  else return NULL;
  struct peer *best = NULL;
  for (int i = 0; i < npeers; i++)
    if (peers[i].family == fam && (!best || peers[i].prefix > best->prefix) && prefix_match(dst, peers[i].net, peers[i].prefix)) best = &peers[i];
  return best;
}

static void *tun_to_udp(void *arg) {
  (void)arg;
  static uint8_t buf[BUF];
  for (;;) {
    ssize_t n = read(tunfd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read tun");
    }
    if (n <= VNET_HDR) continue;
    struct peer *p = lookup(buf + VNET_HDR, (size_t)n - VNET_HDR);
    if (!p) continue;
    if (sendto(udpfd, buf + VNET_HDR, (size_t)n - VNET_HDR, 0, (struct sockaddr *)&p->to, p->tolen) < 0 && errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) die("sendto");
  }
  return NULL;
}

static void *udp_to_tun(void *arg) {
  (void)arg;
  static uint8_t buf[BUF];
  memset(buf, 0, VNET_HDR); // the virtio-net header: all zero (no offload, checksums as sent)
  for (;;) {
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(udpfd, buf + VNET_HDR, sizeof buf - VNET_HDR, 0, (struct sockaddr *)&from, &fl);
    if (n < 0) {
      if (errno == EINTR || errno == ECONNREFUSED) continue;
      die("recvfrom");
    }
    if (n == 0) continue;
    if (write(tunfd, buf, (size_t)n + VNET_HDR) < 0 && errno != EINVAL && errno != EIO) die("write tun");
  }
  return NULL;
}

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  const char *dev = NULL, *listen = NULL, *peersf = NULL, *pidfile = NULL;
  int port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--dev")) dev = argv[i + 1];
    else if (!strcmp(argv[i], "--listen")) listen = argv[i + 1];
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--peers")) peersf = argv[i + 1];
    else if (!strcmp(argv[i], "--pidfile")) pidfile = argv[i + 1];
  }
  if (!dev || !listen || !peersf || port <= 0) {
    fprintf(stderr, "usage: naive-tun-forwarder --dev DEV --listen ADDR --port N --peers FILE [--pidfile FILE]\n");
    return 2;
  }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGPIPE, SIG_IGN);
  load_peers(peersf);

  tunfd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (tunfd < 0) die("/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
  if (ioctl(tunfd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  int hsz = VNET_HDR;
  if (ioctl(tunfd, TUNSETVNETHDRSZ, &hsz) < 0) die("TUNSETVNETHDRSZ");
  if (ioctl(tunfd, TUNSETOFFLOAD, 0) < 0) die("TUNSETOFFLOAD");

  int v6 = strchr(listen, ':') != NULL;
  udpfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (udpfd < 0) die("socket");
  int big = 4 << 20;
  setsockopt(udpfd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(udpfd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  if (v6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, listen, &a->sin6_addr) != 1) die("--listen");
    sl = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, listen, &a->sin_addr) != 1) die("--listen");
    sl = sizeof *a;
  }
  if (bind(udpfd, (struct sockaddr *)&ss, sl) < 0) die("bind");

  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (!f) die(pidfile);
    fprintf(f, "%d\n", getpid());
    fclose(f);
  }
  pthread_t t;
  if (pthread_create(&t, NULL, tun_to_udp, NULL) != 0) die("pthread_create");
  udp_to_tun(NULL);
  return 0;
}
