/* smtp_rdns — session.clientHostname from the client's address: a PTR
 * lookup whose name must resolve back to that address (forward-confirmed
 * reverse DNS), as Postfix's "reverse_client_hostname" check does. On any
 * failure the name stays "[ip]". */
#ifndef LUASMTPD_SMTP_RDNS_H
#define LUASMTPD_SMTP_RDNS_H

struct conn;

/* Looks up, sets session.clientHostname, then calls next(c). */
void smtp_rdns_start(struct conn *c, void (*next)(struct conn *c));
void smtp_rdns_cancel(struct conn *c);

#endif
