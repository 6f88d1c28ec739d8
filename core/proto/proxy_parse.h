/* proxy_parse — the HAProxy PROXY protocol header, versions 1 (text) and 2
 * (binary), as load balancers put it before the client's first byte. Pure:
 * bytes in, addresses out; fuzzable. */
#ifndef LUASMTPD_PROXY_PARSE_H
#define LUASMTPD_PROXY_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define PROXY_HEADER_MAX 1024 /* smtp-server's cap too */

enum proxy_status { PROXY_NEED_MORE, PROXY_OK, PROXY_BAD };

struct proxy_info {
	int version;    /* 1 or 2 */
	bool local;     /* v2 LOCAL or v1 UNKNOWN: the connection's own addresses stand */
	char src[46], dst[46];
	int src_port, dst_port;
	size_t length;  /* bytes of the header, to consume */
};

/* Parses a header at the start of buf[0..len). PROXY_NEED_MORE until it is
 * complete (never past PROXY_HEADER_MAX bytes). */
enum proxy_status proxy_parse(const unsigned char *buf, size_t len, struct proxy_info *out);

#endif
