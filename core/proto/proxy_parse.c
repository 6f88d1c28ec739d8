#include "proto/proxy_parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char proxy_v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                               0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A decimal port, 0 to 65535, no sign or leading junk. */
static bool proxy_port(const char *s, size_t len, int *out)
{
	if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
		return false;
	int v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = v;
	return true;
}

/* An address of the family, written back in canonical form. */
static bool proxy_addr(int family, const char *s, size_t len, char *out, size_t cap)
{
	char tmp[64];
	unsigned char bin[16];
	if (len == 0 || len >= sizeof tmp)
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	return inet_pton(family, tmp, bin) == 1 && inet_ntop(family, bin, out, (socklen_t)cap);
}

/* "PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\n" or "PROXY UNKNOWN ...\r\n". */
static enum proxy_status proxy_parse_v1(const unsigned char *buf, size_t len, struct proxy_info *out)
{
	const unsigned char *crlf = NULL;
	size_t max = len < 108 ? len : 108; /* the v1 spec's longest line */
	for (size_t i = 0; i + 1 < max; i++) {
		if (buf[i] == '\r' && buf[i + 1] == '\n') {
			crlf = buf + i;
			break;
		}
	}
	if (!crlf)
		return len >= 108 ? PROXY_BAD : PROXY_NEED_MORE;
	const char *line = (const char *)buf;
	size_t llen = (size_t)(crlf - buf);
	for (size_t k = 0; k < llen; k++)
		if (buf[k] < ' ' || buf[k] > '~')
			return PROXY_BAD; /* a NUL would cut an address short */
	const char *f[6];
	size_t fl[6];
	int n = 0;
	size_t i = 0;
	while (i < llen && n < 6) {
		size_t j = i;
		while (j < llen && line[j] != ' ')
			j++;
		if (j == i)
			return PROXY_BAD; /* two spaces in a row */
		f[n] = line + i;
		fl[n++] = j - i;
		i = j + 1;
	}
	bool whole = i == llen + 1; /* no trailing space, nothing after field 6 */
	out->version = 1;
	out->length = llen + 2;
	if (n >= 2 && fl[1] == 7 && memcmp(f[1], "UNKNOWN", 7) == 0 && fl[0] == 5 &&
	    memcmp(f[0], "PROXY", 5) == 0) {
		out->local = true;
		return PROXY_OK;
	}
	if (n != 6 || !whole || fl[0] != 5 || memcmp(f[0], "PROXY", 5) != 0 || fl[1] != 4)
		return PROXY_BAD;
	int family;
	if (memcmp(f[1], "TCP4", 4) == 0)
		family = AF_INET;
	else if (memcmp(f[1], "TCP6", 4) == 0)
		family = AF_INET6;
	else
		return PROXY_BAD;
	if (!proxy_addr(family, f[2], fl[2], out->src, sizeof out->src) ||
	    !proxy_addr(family, f[3], fl[3], out->dst, sizeof out->dst) ||
	    !proxy_port(f[4], fl[4], &out->src_port) || !proxy_port(f[5], fl[5], &out->dst_port))
		return PROXY_BAD;
	out->local = false;
	return PROXY_OK;
}

static enum proxy_status proxy_parse_v2(const unsigned char *buf, size_t len, struct proxy_info *out)
{
	if (len < 16)
		return PROXY_NEED_MORE;
	unsigned ver_cmd = buf[12], fam = buf[13];
	size_t body = (size_t)buf[14] << 8 | buf[15];
	if ((ver_cmd >> 4) != 2 || 16 + body > PROXY_HEADER_MAX)
		return PROXY_BAD;
	if (len < 16 + body)
		return PROXY_NEED_MORE;
	out->version = 2;
	out->length = 16 + body;
	unsigned cmd = ver_cmd & 0x0F;
	if (cmd == 0x0) { /* LOCAL: a health check by the proxy itself */
		out->local = true;
		return PROXY_OK;
	}
	if (cmd != 0x1)
		return PROXY_BAD;
	const unsigned char *a = buf + 16;
	if (fam == 0x11 && body >= 12) { /* TCP over IPv4 */
		inet_ntop(AF_INET, a, out->src, sizeof out->src);
		inet_ntop(AF_INET, a + 4, out->dst, sizeof out->dst);
		out->src_port = a[8] << 8 | a[9];
		out->dst_port = a[10] << 8 | a[11];
	} else if (fam == 0x21 && body >= 36) { /* TCP over IPv6 */
		inet_ntop(AF_INET6, a, out->src, sizeof out->src);
		inet_ntop(AF_INET6, a + 16, out->dst, sizeof out->dst);
		out->src_port = a[32] << 8 | a[33];
		out->dst_port = a[34] << 8 | a[35];
	} else if (fam == 0x00) { /* UNSPEC: addresses unknown */
		out->local = true;
		return PROXY_OK;
	} else {
		return PROXY_BAD;
	}
	out->local = false;
	return PROXY_OK;
}

enum proxy_status proxy_parse(const unsigned char *buf, size_t len, struct proxy_info *out)
{
	memset(out, 0, sizeof *out);
	size_t sig = len < 12 ? len : 12;
	if (memcmp(buf, proxy_v2_sig, sig) == 0)
		return sig < 12 ? PROXY_NEED_MORE : proxy_parse_v2(buf, len, out);
	static const char v1[] = "PROXY ";
	size_t pre = len < 6 ? len : 6;
	if (memcmp(buf, v1, pre) != 0)
		return PROXY_BAD;
	return pre < 6 ? PROXY_NEED_MORE : proxy_parse_v1(buf, len, out);
}
