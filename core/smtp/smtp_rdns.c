#include "smtp/smtp_rdns.h"
#include "smtp/session.h"

#include "net/conn.h"
#include "net/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A session's lookup while it runs (s->rdns): most sessions never make one. */
struct rdns_lookup {
	struct dns_query *query; /* the PTR query, then the forward one */
	void (*next)(struct conn *c);
	char *name; /* the PTR name while its forward lookup runs */
};

static void rdns_free(struct smtp_session *s)
{
	free(s->rdns->name);
	free(s->rdns);
	s->rdns = NULL;
}

static void rdns_finish(struct conn *c, const char *name)
{
	struct smtp_session *s = conn_session(c);
	if (name) {
		smtp_session_set_name(&s->client_hostname, name, strlen(name));
		s->policy->changed(s, FACT_CLIENT_HOSTNAME);
		conn_log(c, LOG_DEBUG, "client hostname", "name", name, NULL);
	}
	void (*next)(struct conn *) = s->rdns->next;
	rdns_free(s);
	next(c);
	conn_resume(c);
}

/* Does the forward answer contain the client's own address? */
static bool rdns_confirms(struct conn *c, int status, const unsigned char *abuf, int alen)
{
	if (status != ARES_SUCCESS)
		return false;
	bool v6 = strchr(c->remote_addr, ':') != NULL;
	char s[INET6_ADDRSTRLEN];
	if (!v6) {
		struct ares_addrttl a[16];
		int n = 16;
		if (ares_parse_a_reply(abuf, alen, NULL, a, &n) != ARES_SUCCESS)
			return false;
		for (int i = 0; i < n; i++)
			if (inet_ntop(AF_INET, &a[i].ipaddr, s, sizeof s) && strcmp(s, c->remote_addr) == 0)
				return true;
		return false;
	}
	struct ares_addr6ttl a[16];
	int n = 16;
	if (ares_parse_aaaa_reply(abuf, alen, NULL, a, &n) != ARES_SUCCESS)
		return false;
	unsigned char want[16];
	if (inet_pton(AF_INET6, c->remote_addr, want) != 1)
		return false;
	for (int i = 0; i < n; i++)
		if (memcmp(&a[i].ip6addr, want, 16) == 0)
			return true;
	return false;
}

static void rdns_forward_answer(void *arg, int status, const unsigned char *abuf, int alen)
{
	struct conn *c = arg;
	rdns_finish(c, rdns_confirms(c, status, abuf, alen) ? conn_session(c)->rdns->name : NULL);
}

static void rdns_ptr_answer(void *arg, int status, const unsigned char *abuf, int alen)
{
	struct conn *c = arg;
	struct hostent *h = NULL;
	if (status != ARES_SUCCESS || ares_parse_ptr_reply(abuf, alen, NULL, 0, AF_INET, &h) != ARES_SUCCESS ||
	    !h || !h->h_name || strlen(h->h_name) > 253) {
		if (h)
			ares_free_hostent(h);
		rdns_finish(c, NULL);
		return;
	}
	struct rdns_lookup *l = conn_session(c)->rdns;
	l->name = strdup(h->h_name);
	ares_free_hostent(h);
	if (!l->name)
		abort();
	bool v6 = strchr(c->remote_addr, ':') != NULL;
	char err[128];
	l->query = dns_query(l->name, v6 ? ns_t_aaaa : ns_t_a, rdns_forward_answer, c, err, sizeof err);
	if (!l->query)
		rdns_finish(c, NULL);
}

void smtp_rdns_start(struct conn *c, void (*next)(struct conn *c))
{
	struct smtp_session *s = conn_session(c);
	char rev[80], err[128];
	/* The answers come from the loop, never inside dns_query (dns.h). */
	struct dns_query *q = dns_reverse_name(c->remote_addr, rev, sizeof rev)
	                              ? dns_query(rev, ns_t_ptr, rdns_ptr_answer, c, err, sizeof err)
	                              : NULL;
	if (!q) {
		next(c);
		return;
	}
	if (!(s->rdns = calloc(1, sizeof *s->rdns)))
		abort();
	s->rdns->query = q;
	s->rdns->next = next;
}

void smtp_rdns_cancel(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (!s->rdns)
		return;
	dns_cancel(s->rdns->query);
	rdns_free(s);
}
