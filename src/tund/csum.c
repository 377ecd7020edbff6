// The Internet checksum (RFC 1071): 32-bit words summed into 64 bits, folded at the end.
#define _GNU_SOURCE
#include <string.h>
#include <arpa/inet.h>
#include "tund.h"

uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t n) {
  while (n >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    sum += w;
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    sum += w;
    p += 2;
    n -= 2;
  }
  if (n) {
    // the odd byte is the high byte of a big-endian 16-bit word: in memory order that is p[0], 0
    uint8_t last[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, last, 2);
    sum += w;
  }
  return sum;
}

uint16_t csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

// The pseudo-header of TCP/UDP/ICMPv6 (network byte order words, as csum_add sums memory).
uint64_t pseudo_sum(int family, const uint8_t *ip, uint8_t proto, uint32_t len) {
  uint64_t s = 0;
  if (family == 4) {
    s = csum_add(s, ip + 12, 8);
  } else {
    s = csum_add(s, ip + 8, 32);
  }
  uint32_t l = htonl(len);
  uint32_t p = htonl(proto);
  s = csum_add(s, (const uint8_t *)&l, 4);
  s = csum_add(s, (const uint8_t *)&p, 4);
  return s;
}
