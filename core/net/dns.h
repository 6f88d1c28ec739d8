/* dns — the process's asynchronous resolver: c-ares driven by libev. One
 * channel per serving process (made on first use, so each worker has its
 * own); queries report to a C callback, or not at all once cancelled.
 *
 * The rule every caller relies on: a query never completes before
 * dns_query returns. An answer c-ares gives at once (a name it refuses, a
 * cached answer) is delivered on the next loop turn, so the handle
 * dns_query returns is always live until its callback runs or it is
 * cancelled, and the callback never runs inside the caller's own call. */
#ifndef LUASMTPD_DNS_H
#define LUASMTPD_DNS_H

#include <stdbool.h>
#include <stddef.h>

struct dns_query;

/* status is an ARES_* code; abuf/alen the raw answer on ARES_SUCCESS. */
typedef void (*dns_callback)(void *arg, int status, const unsigned char *abuf, int alen);

/* Resolver settings (smtp.dns.configure): "ip[:port]" servers, comma
 * separated; per-try timeout in seconds; tries. Applies to new channels
 * and to the current one. false and err when servers do not parse. */
bool dns_configure(const char *servers, double timeout, int tries, char *err, size_t errlen);
/* type is an ns_t_* (1 A, 28 AAAA, 15 MX, 16 TXT, 12 PTR). NULL when the
 * resolver cannot start (err says why; the callback will not be called). */
struct dns_query *dns_query(const char *name, int type, dns_callback cb, void *arg, char *err,
                            size_t errlen);
/* The callback will not be called; q is gone. Only before the callback. */
void dns_cancel(struct dns_query *q);
/* "4.3.2.1.in-addr.arpa" / nibble form for an IPv6 address; false if ip
 * is not an address. */
bool dns_reverse_name(const char *ip, char *out, size_t len);

#endif
