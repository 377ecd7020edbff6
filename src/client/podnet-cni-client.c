/*
 * podnet's CNI client: the executable a runtime execs for every CNI call.
 *
 * Why C: a runtime execs the plugin for every operation, so start-up is part of every ADD.
 * Node takes ~80 ms to start; a POSIX shell with socat ~7 ms idle (measured 20-50 ms on a
 * loaded node); this static binary ~1 ms. It holds no logic: VERSION is answered here, every
 * other verb is handed to `podnet agent` over its unix socket (wire format in
 * src/agent/protocol.ts), and without an agent it execs the TypeScript plugin standalone.
 *
 * Configuration: .podnet-client.conf beside this executable (written by `podnet cni install`):
 *   socket=/run/podnet/podnet.sock   node=/usr/bin/node   bundle=/path/to/dist/podnet-cni.mjs
 * PODNET_SOCKET in the environment overrides the socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

#define VERSION_JSON "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
#define MAGIC "PODNET1"

struct buf {
  char *p;
  size_t len, cap;
};

static void put(struct buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      fputs("podnet: out of memory\n", stderr);
      exit(1);
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

static int read_all(int fd, struct buf *b) {
  char chunk[65536];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return 0;
    put(b, chunk, (size_t)n);
  }
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static char conf_socket[PATH_MAX] = "/run/podnet/podnet.sock";
static char conf_node[PATH_MAX] = "/usr/bin/node";
static char conf_bundle[PATH_MAX] = "";

static void load_conf(void) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  self[n] = 0;
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/.podnet-client.conf", dirname(self));
  FILE *f = fopen(path, "re");
  if (!f) return;
  char line[PATH_MAX + 16];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    char *dst = !strcmp(line, "socket") ? conf_socket : !strcmp(line, "node") ? conf_node : !strcmp(line, "bundle") ? conf_bundle : NULL;
    if (dst) snprintf(dst, PATH_MAX, "%s", eq + 1);
  }
  fclose(f);
}

/* Runs the plugin in Node; `input` (already read from stdin) is handed over through a memfd. */
static void standalone(const char *plugin, struct buf *input) {
  if (input) {
    int mfd = memfd_create("podnet-stdin", MFD_CLOEXEC);
    if (mfd < 0 || write_all(mfd, input->p, input->len) < 0 || lseek(mfd, 0, SEEK_SET) < 0 || dup2(mfd, 0) < 0) {
      printf("{\"cniVersion\":\"1.1.0\",\"code\":105,\"msg\":\"podnet client: cannot hand the request to the standalone plugin: %s\"}\n", strerror(errno));
      exit(1);
    }
  }
  if (!conf_bundle[0]) {
    printf("{\"cniVersion\":\"1.1.0\",\"code\":105,\"msg\":\"podnet client: no agent at %s and no bundle configured (.podnet-client.conf)\"}\n", conf_socket);
    exit(1);
  }
  setenv("PODNET_PLUGIN", plugin, 1);
  char *args[] = {conf_node, conf_bundle, NULL};
  execv(conf_node, args);
  printf("{\"cniVersion\":\"1.1.0\",\"code\":105,\"msg\":\"podnet client: cannot run %s: %s\"}\n", conf_node, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  (void)argc;
  char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  const char *plugin = !strcmp(base, "podnet-ipam") ? "podnet-ipam" : "podnet";
  const char *cmd = getenv("CNI_COMMAND");
  if (cmd && !strcmp(cmd, "VERSION")) {
    fputs(VERSION_JSON, stdout);
    return 0;
  }
  load_conf();
  const char *sock_path = getenv("PODNET_SOCKET");
  if (sock_path && *sock_path) snprintf(conf_socket, sizeof conf_socket, "%s", sock_path);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(conf_socket) >= sizeof sa.sun_path) standalone(plugin, NULL);
  strcpy(sa.sun_path, conf_socket);
  /* no agent: stdin is untouched, so the plugin reads it itself */
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) standalone(plugin, NULL);

  struct buf input = {0}, req = {0}, resp = {0};
  if (read_all(0, &input) < 0) input.len = 0;
  put(&req, MAGIC, sizeof MAGIC); /* includes the NUL */
  for (char **e = environ; *e; e++) {
    if ((!strncmp(*e, "CNI_", 4) || !strncmp(*e, "PODNET_CNI_LOG=", 15)) && strchr(*e, '=')) put(&req, *e, strlen(*e) + 1);
  }
  char pe[64];
  int n = snprintf(pe, sizeof pe, "PODNET_PLUGIN=%s", plugin);
  put(&req, pe, (size_t)n + 1);
  put(&req, "", 1);
  put(&req, input.p ? input.p : "", input.len);
  if (write_all(fd, req.p, req.len) < 0 || shutdown(fd, SHUT_WR) < 0 || read_all(fd, &resp) < 0) standalone(plugin, &input);
  close(fd);
  /* "<exit code>\n<stdout>"; anything else means the agent died mid-request */
  size_t i = 0;
  while (i < resp.len && resp.p[i] >= '0' && resp.p[i] <= '9') i++;
  if (i == 0 || i >= resp.len || resp.p[i] != '\n') standalone(plugin, &input);
  int code = atoi(resp.p);
  if (write_all(1, resp.p + i + 1, resp.len - i - 1) < 0) return 1;
  return code;
}
