// podnet-tund: the tun backend's datapath process (docs/tun.md). It attaches to podnet.tun,
// binds the tunnel's UDP port, and moves packets both ways on two threads; the main thread
// handles signals (SIGHUP: reload the peers file, SIGUSR1: write stats, SIGTERM/SIGINT: exit)
// and writes the stats file every second. It outlives the agent that started it.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_tun.h>
#include <linux/udp.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "tund.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

struct stats g_stats;

enum { EXIT_USAGE = 2, EXIT_BIND = 3, EXIT_TUN = 4 };

static const char *g_dev, *g_listen, *g_peers, *g_stats_path, *g_pidfile;
static int g_port;

void logmsg(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ podnet-tund[%d]: %s\n", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000), getpid(), line);
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "podnet-tund: %s\n", line);
  exit(code);
}

// A packet thread's fatal error (the device went away): the pidfile goes too, so the supervisor
// sees at once that no datapath runs, and the exit code is 1.
void fatal_exit(void) {
  if (g_pidfile) unlink(g_pidfile);
  _exit(1);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: podnet-tund --dev NAME --listen IP --port N --peers FILE --stats FILE --pidfile FILE\n"
          "  the tun backend's datapath: IP packets from the TUN device NAME (an existing persistent\n"
          "  tun with vnet_hdr) go in UDP to the peer whose subnet holds their destination, and back.\n"
          "  SIGHUP re-reads FILE of peers, SIGUSR1 writes the stats now, SIGTERM exits.\n"
          "  exit codes: 2 usage, 3 the UDP port cannot be bound, 4 the TUN device cannot be attached, 1 other\n");
}

static int write_atomic(const char *path, const char *data, size_t len) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, getpid()) >= (int)sizeof tmp) return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, len);
  if (close(fd) != 0 || n != (ssize_t)len) {
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

static void write_stats(void) {
  const struct table *t = table_current();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char b[2048];
  int n = snprintf(b, sizeof b,
                   "{\"pid\":%d,\"dev\":\"%s\",\"listen\":\"%s\",\"port\":%d,\"peers\":%d,\"locals\":%d,"
                   "\"tun_reads\":%llu,\"tun_read_bytes\":%llu,\"udp_sent_datagrams\":%llu,\"udp_send_calls\":%llu,"
                   "\"udp_recv_calls\":%llu,\"udp_recv_datagrams\":%llu,\"tun_writes\":%llu,\"tun_write_bytes\":%llu,"
                   "\"gso_superpackets\":%llu,\"gro_coalesced\":%llu,"
                   "\"drop_unknown_source\":%llu,\"drop_inner_source\":%llu,\"drop_inner_dest\":%llu,\"drop_malformed\":%llu,"
                   "\"no_peer_icmp\":%llu,\"errors\":%llu,\"updated_ms\":%lld}\n",
                   getpid(), g_dev, g_listen, g_port, t->npeers, t->nlocals,
                   (unsigned long long)READ(tun_reads), (unsigned long long)READ(tun_read_bytes), (unsigned long long)READ(udp_sent_datagrams), (unsigned long long)READ(udp_send_calls),
                   (unsigned long long)READ(udp_recv_calls), (unsigned long long)READ(udp_recv_datagrams), (unsigned long long)READ(tun_writes), (unsigned long long)READ(tun_write_bytes),
                   (unsigned long long)READ(gso_superpackets), (unsigned long long)READ(gro_coalesced),
                   (unsigned long long)READ(drop_unknown_source), (unsigned long long)READ(drop_inner_source), (unsigned long long)READ(drop_inner_dest), (unsigned long long)READ(drop_malformed),
                   (unsigned long long)READ(no_peer_icmp), (unsigned long long)READ(errors), (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
  if (n > 0 && n < (int)sizeof b && write_atomic(g_stats_path, b, (size_t)n) != 0) logmsg("cannot write %s: %s", g_stats_path, strerror(errno));
}

static int open_tun(const char *dev) {
  if (strlen(dev) >= IFNAMSIZ) die(EXIT_USAGE, "--dev %s: longer than %d characters", dev, IFNAMSIZ - 1);
  // attach only: TUNSETIFF on a name that does not exist would create a new device
  if (if_nametoindex(dev) == 0) die(EXIT_TUN, "TUN device %s does not exist (the agent creates it: ip tuntap add name %s mode tun vnet_hdr)", dev, dev);
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die(EXIT_TUN, "open /dev/net/tun: %s", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0)
    die(EXIT_TUN, "attach to %s: %s (it must be a persistent tun device without pi and with vnet_hdr, not in use by another process)", dev, strerror(errno));
  int hdr = VNET_HDR_LEN;
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) != 0) die(EXIT_TUN, "%s: TUNSETVNETHDRSZ: %s", dev, strerror(errno));
  unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
  if (ioctl(fd, TUNSETOFFLOAD, off) != 0) {
    logmsg("%s: TSO offloads refused (%s): packets come one by one", dev, strerror(errno));
    if (ioctl(fd, TUNSETOFFLOAD, 0) != 0) die(EXIT_TUN, "%s: TUNSETOFFLOAD: %s", dev, strerror(errno));
  }
  return fd;
}

static int open_udp(const char *ip, int port, int *family) {
  struct sockaddr_storage sa;
  socklen_t salen;
  memset(&sa, 0, sizeof sa);
  struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
  if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    salen = sizeof *s4;
  } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    salen = sizeof *s6;
  } else {
    die(EXIT_USAGE, "--listen %s: not an IP address", ip);
  }
  *family = sa.ss_family;
  int fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die(1, "socket: %s", strerror(errno));
  int big = 8 << 20, one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  // inner packets are sized to fit the underlay: never fragment the outer datagram
  int pmtu = IP_PMTUDISC_PROBE;
  if (sa.ss_family == AF_INET) setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  else setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu);
  if (bind(fd, (struct sockaddr *)&sa, salen) != 0) die(EXIT_BIND, "bind %s%s%s:%d: %s", sa.ss_family == AF_INET6 ? "[" : "", ip, sa.ss_family == AF_INET6 ? "]" : "", port, strerror(errno));
  if (setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) != 0) logmsg("UDP_GRO refused (%s): datagrams come one by one", strerror(errno));
  return fd;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"dev", required_argument, 0, 'd'}, {"listen", required_argument, 0, 'l'}, {"port", required_argument, 0, 'p'},
      {"peers", required_argument, 0, 'P'}, {"stats", required_argument, 0, 's'}, {"pidfile", required_argument, 0, 'f'},
      {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
  };
  const char *port = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
      case 'd': g_dev = optarg; break;
      case 'l': g_listen = optarg; break;
      case 'p': port = optarg; break;
      case 'P': g_peers = optarg; break;
      case 's': g_stats_path = optarg; break;
      case 'f': g_pidfile = optarg; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return EXIT_USAGE;
    }
  }
  if (optind != argc || !g_dev || !g_listen || !port || !g_peers || !g_stats_path || !g_pidfile) {
    usage(stderr);
    return EXIT_USAGE;
  }
  char *end;
  long p = strtol(port, &end, 10);
  if (*end || p < 1 || p > 65535) die(EXIT_USAGE, "--port %s: not a port (1-65535)", port);
  g_port = (int)p;

  // every thread inherits the mask: signals are taken by sigwait in this thread only
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  static struct dp d;
  d.udp = open_udp(g_listen, g_port, &d.udp_family);
  d.tun = open_tun(g_dev);
  d.gso_ok = 1;
  table_publish(table_load(g_peers, d.udp_family));
  if (!table_current()) die(1, "out of memory");

  pthread_t tx, rx;
  if (pthread_create(&tx, NULL, tx_loop, &d) != 0 || pthread_create(&rx, NULL, rx_loop, &d) != 0) die(1, "pthread_create failed");
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%d\n", getpid());
  if (write_atomic(g_pidfile, pid, (size_t)n) != 0) die(1, "cannot write the pidfile %s: %s", g_pidfile, strerror(errno));
  write_stats();
  logmsg("forwarding: dev %s, udp %s port %d, %d peers, %d local subnets", g_dev, g_listen, g_port, table_current()->npeers, table_current()->nlocals);

  struct timespec tick = {.tv_sec = 1, .tv_nsec = 0};
  for (;;) {
    int sig = sigtimedwait(&set, NULL, &tick);
    if (sig == SIGHUP) {
      struct table *t = table_load(g_peers, d.udp_family);
      if (t) {
        table_publish(t);
        logmsg("peers reloaded: %d peers, %d local subnets", t->npeers, t->nlocals);
      }
      write_stats();
    } else if (sig == SIGTERM || sig == SIGINT) {
      write_stats();
      unlink(g_pidfile);
      logmsg("exiting on %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      _exit(0);
    } else {
      // SIGUSR1 or the tick
      write_stats();
      table_reap(500);
    }
  }
}
