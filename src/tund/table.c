// The peer table: read from the peers file the agent writes (docs/tun.md), published by a pointer
// swap so the two packet threads never lock.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tund.h"

static struct table *g_current;
// swapped-out tables, freed once no packet thread can still hold them (a batch takes microseconds)
#define RETIRED_MAX 64
static struct {
  struct table *t;
  struct timespec at;
} g_retired[RETIRED_MAX];
static int g_nretired;

static int parse_prefix(const char *s, struct prefix *p) {
  char buf[80];
  const char *slash = strchr(s, '/');
  if (!slash || (size_t)(slash - s) >= sizeof buf) return -1;
  memcpy(buf, s, (size_t)(slash - s));
  buf[slash - s] = 0;
  char *end;
  long len = strtol(slash + 1, &end, 10);
  if (*end || end == slash + 1) return -1;
  memset(p, 0, sizeof *p);
  if (inet_pton(AF_INET, buf, p->addr) == 1) {
    if (len < 0 || len > 32) return -1;
    p->family = 4;
  } else if (inet_pton(AF_INET6, buf, p->addr) == 1) {
    if (len < 0 || len > 128) return -1;
    p->family = 6;
  } else {
    return -1;
  }
  p->len = (int)len;
  return 0;
}

int prefix_contains(const struct prefix *p, int family, const uint8_t *a) {
  if (p->family != family) return 0;
  int full = p->len / 8, rest = p->len % 8;
  if (memcmp(p->addr, a, (size_t)full) != 0) return 0;
  if (rest) {
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    if ((p->addr[full] & mask) != (a[full] & mask)) return 0;
  }
  return 1;
}

// The underlay address of a peer line, as a socket address of the UDP socket's family
// (an IPv4 peer of an IPv6 socket becomes a v4-mapped address).
static int parse_underlay(const char *ip, const char *port, int udp_family, struct sockaddr_storage *sa, socklen_t *len) {
  char *end;
  long p = strtol(port, &end, 10);
  if (*end || p < 1 || p > 65535) return -1;
  memset(sa, 0, sizeof *sa);
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, ip, &a4) == 1) {
    if (udp_family == AF_INET) {
      struct sockaddr_in *s = (struct sockaddr_in *)sa;
      s->sin_family = AF_INET;
      s->sin_port = htons((uint16_t)p);
      s->sin_addr = a4;
      *len = sizeof *s;
      return 0;
    }
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)sa;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)p);
    s->sin6_addr.s6_addr[10] = 0xff;
    s->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&s->sin6_addr.s6_addr[12], &a4, 4);
    *len = sizeof *s;
    return 0;
  }
  if (inet_pton(AF_INET6, ip, &a6) == 1 && udp_family == AF_INET6) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)sa;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)p);
    s->sin6_addr = a6;
    *len = sizeof *s;
    return 0;
  }
  return -1;
}

struct table *table_load(const char *path, int udp_family) {
  struct table *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno != ENOENT) logmsg("peers file %s: %s (no peers)", path, strerror(errno));
    return t;
  }
  int cap_p = 0, cap_l = 0, lineno = 0;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *save, *kind = strtok_r(line, " \t\r\n", &save);
    if (!kind || kind[0] == '#') continue;
    if (strcmp(kind, "local") == 0) {
      char *c = strtok_r(NULL, " \t\r\n", &save);
      struct prefix p;
      if (!c || parse_prefix(c, &p) != 0) {
        logmsg("peers file line %d: malformed local line, skipped", lineno);
        continue;
      }
      if (t->nlocals == cap_l) {
        cap_l = cap_l ? cap_l * 2 : 4;
        struct prefix *n = realloc(t->locals, (size_t)cap_l * sizeof *n);
        if (!n) break;
        t->locals = n;
      }
      t->locals[t->nlocals++] = p;
    } else if (strcmp(kind, "peer") == 0) {
      char *c = strtok_r(NULL, " \t\r\n", &save), *ip = strtok_r(NULL, " \t\r\n", &save), *port = strtok_r(NULL, " \t\r\n", &save);
      struct peer pe;
      if (!c || !ip || !port || parse_prefix(c, &pe.subnet) != 0 || parse_underlay(ip, port, udp_family, &pe.sa, &pe.salen) != 0) {
        logmsg("peers file line %d: malformed peer line, skipped", lineno);
        continue;
      }
      if (t->npeers == cap_p) {
        cap_p = cap_p ? cap_p * 2 : 8;
        struct peer *n = realloc(t->peers, (size_t)cap_p * sizeof *n);
        if (!n) break;
        t->peers = n;
      }
      t->peers[t->npeers++] = pe;
    }
    // other kinds: a newer agent's lines, ignored
  }
  fclose(f);
  return t;
}

void table_free(struct table *t) {
  if (!t) return;
  free(t->peers);
  free(t->locals);
  free(t);
}

struct table *table_current(void) {
  return __atomic_load_n(&g_current, __ATOMIC_ACQUIRE);
}

// Called by the main thread only.
void table_publish(struct table *t) {
  struct table *old = __atomic_exchange_n(&g_current, t, __ATOMIC_ACQ_REL);
  if (!old) return;
  if (g_nretired == RETIRED_MAX) table_reap(0); // hundreds of reloads within a second
  g_retired[g_nretired].t = old;
  clock_gettime(CLOCK_MONOTONIC, &g_retired[g_nretired].at);
  g_nretired++;
}

// Frees the tables swapped out more than `min_age_ms` ago. Main thread only.
void table_reap(int min_age_ms) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int kept = 0;
  for (int i = 0; i < g_nretired; i++) {
    long age = (now.tv_sec - g_retired[i].at.tv_sec) * 1000 + (now.tv_nsec - g_retired[i].at.tv_nsec) / 1000000;
    if (age >= min_age_ms) table_free(g_retired[i].t);
    else g_retired[kept++] = g_retired[i];
  }
  g_nretired = kept;
}

const struct peer *table_route(const struct table *t, int family, const uint8_t *dst) {
  const struct peer *best = NULL;
  for (int i = 0; i < t->npeers; i++) {
    const struct peer *p = &t->peers[i];
    if ((!best || p->subnet.len > best->subnet.len) && prefix_contains(&p->subnet, family, dst)) best = p;
  }
  return best;
}

int table_is_local(const struct table *t, int family, const uint8_t *dst) {
  for (int i = 0; i < t->nlocals; i++)
    if (prefix_contains(&t->locals[i], family, dst)) return 1;
  return 0;
}

static int same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET) return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
  return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

int table_source_ok(const struct table *t, const struct sockaddr_storage *from, int family, const uint8_t *src, int *known_sender) {
  *known_sender = 0;
  for (int i = 0; i < t->npeers; i++) {
    const struct peer *p = &t->peers[i];
    if (!same_host(&p->sa, from)) continue;
    *known_sender = 1;
    if (prefix_contains(&p->subnet, family, src)) return 1;
  }
  return 0;
}
