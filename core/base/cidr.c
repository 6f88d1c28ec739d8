#include "base/cidr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

bool cidr_parse(const char *s, struct cidr *out)
{
	char tmp[64];
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	if (len == 0 || len >= sizeof tmp)
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, tmp, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, tmp, out->addr) == 1)
		out->family = AF_INET6;
	else
		return false;
	int max = out->family == AF_INET ? 32 : 128;
	out->bits = max;
	if (slash) {
		char *end;
		long b = strtol(slash + 1, &end, 10);
		if (*end || end == slash + 1 || b < 0 || b > max)
			return false;
		out->bits = (int)b;
	}
	return true;
}

bool cidr_match(const struct cidr *c, const char *ip)
{
	unsigned char a[16];
	if (inet_pton(c->family, ip, a) != 1)
		return false;
	int full = c->bits / 8, rest = c->bits % 8;
	if (memcmp(a, c->addr, (size_t)full) != 0)
		return false;
	if (!rest)
		return true;
	unsigned char mask = (unsigned char)(0xFF << (8 - rest));
	return (a[full] & mask) == (c->addr[full] & mask);
}

bool cidr_list_match(const struct cidr *list, size_t n, const char *ip)
{
	for (size_t i = 0; i < n; i++)
		if (cidr_match(&list[i], ip))
			return true;
	return n == 0;
}
