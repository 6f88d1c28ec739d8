/* cidr — "192.0.2.0/24", "2001:db8::/32" or a single address, and whether
 * an address string falls in it. */
#ifndef LUASMTPD_CIDR_H
#define LUASMTPD_CIDR_H

#include <stdbool.h>
#include <stddef.h>

struct cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int bits;
};

bool cidr_parse(const char *s, struct cidr *out);
bool cidr_match(const struct cidr *c, const char *ip);
/* Is ip in one of the n entries? An empty list trusts everyone. */
bool cidr_list_match(const struct cidr *list, size_t n, const char *ip);

#endif
