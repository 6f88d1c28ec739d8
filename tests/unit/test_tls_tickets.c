/*
 * test_tls_tickets.c — unit tests for core/tls/tls_tickets.c with real
 * OpenSSL handshakes in memory (a BIO pair, no socket) and a clock the
 * test moves: a ticket resumes in the period it was issued and the next
 * one (renewed there), not after; a context rebuilt from the same options
 * (a reload) resumes the first one's sessions, one with other options does
 * not; a TLS 1.3 resumption brings a new ticket; the operator's ticketKeys are fixed keys. TLS 1.2 and 1.3.
 * Run from the repository root, after `make certs`.
 */
#include "tls/tls_context.h"
#include "tls/tls_tickets.h"
#include "unit.h"

#define DEV_KEY "certs/dev/localhost.key"
#define DEV_CERT "certs/dev/localhost.crt"

static time_t fake_now;

static time_t fake_clock(void)
{
	return fake_now;
}

static struct tls_blob blob(const char *s, size_t len)
{
	return (struct tls_blob){s, len};
}

static SSL_CTX *server_ctx(const char *suites, const char *ticket_keys)
{
	struct tls_options o;
	tls_options_init(&o);
	o.key = blob(DEV_KEY, strlen(DEV_KEY));
	o.cert = blob(DEV_CERT, strlen(DEV_CERT));
	o.ciphersuites = suites;
	if (ticket_keys)
		o.ticket_keys = blob(ticket_keys, 48);
	char err[256] = "";
	SSL_CTX *ctx = tls_context_new(&o, err, sizeof err);
	if (!ctx)
		printf("     %s\n", err);
	return ctx;
}

/* One handshake, then a byte from the server (TLS 1.3 tickets come before
 * it). Returns the client's session; *reused says if it was resumed. */
static SSL_SESSION *handshake(SSL_CTX *server, SSL_CTX *client, SSL_SESSION *resume, bool *reused)
{
	SSL *c = SSL_new(client), *s = SSL_new(server);
	BIO *cb, *sb;
	BIO_new_bio_pair(&cb, 0, &sb, 0);
	SSL_set_bio(c, cb, cb);
	SSL_set_bio(s, sb, sb);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	if (resume)
		SSL_set_session(c, resume);
	int rc = 0, rs = 0;
	for (int i = 0; i < 20 && (rc != 1 || rs != 1); i++) {
		rc = SSL_do_handshake(c);
		rs = SSL_do_handshake(s);
	}
	CHECK(rc == 1 && rs == 1);
	char byte = 0;
	CHECK(SSL_write(s, "x", 1) == 1);
	CHECK(SSL_read(c, &byte, 1) == 1 && byte == 'x');
	*reused = SSL_session_reused(c) == 1;
	SSL_SESSION *sess = SSL_get1_session(c);
	SSL_shutdown(c); /* a session not shut down is marked not resumable */
	SSL_shutdown(s);
	SSL_free(c);
	SSL_free(s);
	return sess;
}

static SSL_CTX *client_ctx(int version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, version);
	SSL_CTX_set_max_proto_version(ctx, version);
	return ctx;
}

static bool resumes(SSL_CTX *server, SSL_CTX *client, SSL_SESSION **sess)
{
	bool reused = false;
	SSL_SESSION *next = handshake(server, client, *sess, &reused);
	SSL_SESSION_free(*sess);
	*sess = next;
	return reused;
}

static void rotation(int version)
{
	SSL_CTX *server = server_ctx(NULL, NULL), *client = client_ctx(version);
	fake_now = 1000 * (time_t)TLS_TICKET_PERIOD + 10;
	bool reused = true;
	SSL_SESSION *first = handshake(server, client, NULL, &reused);
	CHECK(!reused);
	SSL_SESSION *sess = SSL_SESSION_dup(first);
	CHECK(resumes(server, client, &sess)); /* the same period */
	fake_now += TLS_TICKET_PERIOD;
	SSL_SESSION *old = SSL_SESSION_dup(first);
	CHECK(resumes(server, client, &old)); /* the next period: the previous key still decrypts */
	fake_now += TLS_TICKET_PERIOD;
	SSL_SESSION *stale = SSL_SESSION_dup(first);
	CHECK(!resumes(server, client, &stale)); /* two periods on: full handshake */
	CHECK(resumes(server, client, &old));    /* the ticket renewed one period ago resumes */
	SSL_SESSION_free(first);
	SSL_SESSION_free(sess);
	SSL_SESSION_free(old);
	SSL_SESSION_free(stale);
	SSL_CTX_free(server);
	SSL_CTX_free(client);
}

static void test_rotation_tls13(void)
{
	rotation(TLS1_3_VERSION);
}

static void test_rotation_tls12(void)
{
	rotation(TLS1_2_VERSION);
}

/* TLS 1.3: every resumption brings new tickets (a client that replaces
 * the ticket it used, as Postfix's cache does, keeps resuming). */
static void test_tls13_resumption_renews_the_ticket(void)
{
	SSL_CTX *server = server_ctx(NULL, NULL), *client = client_ctx(TLS1_3_VERSION);
	bool reused;
	SSL_SESSION *first = handshake(server, client, NULL, &reused);
	SSL_SESSION *sess = SSL_SESSION_dup(first);
	CHECK(resumes(server, client, &sess));
	const unsigned char *t1, *t2;
	size_t l1, l2;
	SSL_SESSION_get0_ticket(first, &t1, &l1);
	SSL_SESSION_get0_ticket(sess, &t2, &l2);
	CHECK(l1 > 0 && l2 > 0 && (l1 != l2 || memcmp(t1, t2, l1) != 0));
	CHECK(resumes(server, client, &sess));
	SSL_SESSION_free(first);
	SSL_SESSION_free(sess);
	SSL_CTX_free(server);
	SSL_CTX_free(client);
}

/* A session the client gets from issuer resumes at same and not at
 * other, `later` seconds on by the fake clock; frees the four contexts. */
static void check_resumes_only_at(SSL_CTX *issuer, SSL_CTX *same, SSL_CTX *other, SSL_CTX *client, time_t later)
{
	bool reused;
	SSL_SESSION *sess = handshake(issuer, client, NULL, &reused);
	SSL_SESSION *copy = SSL_SESSION_dup(sess);
	fake_now += later;
	CHECK(resumes(same, client, &sess));
	CHECK(!resumes(other, client, &copy));
	SSL_SESSION_free(sess);
	SSL_SESSION_free(copy);
	SSL_CTX_free(issuer);
	SSL_CTX_free(same);
	SSL_CTX_free(other);
	SSL_CTX_free(client);
}

/* Rebuilt contexts share the process's keys when nothing changed. */
static void test_rebuilt_context_resumes(void)
{
	static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
	for (size_t i = 0; i < 2; i++) {
		SSL_CTX *a = server_ctx(NULL, NULL), *b = server_ctx(NULL, NULL), *client = client_ctx(versions[i]);
		SSL_CTX *other = server_ctx("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", NULL);
		check_resumes_only_at(a, b, other, client, 0);
	}
}

/* ticketKeys: the same keys resume whatever the clock, other keys not. */
static void test_fixed_ticket_keys(void)
{
	char keys[48], other_keys[48];
	for (int i = 0; i < 48; i++) {
		keys[i] = (char)i;
		other_keys[i] = (char)(100 + i);
	}
	SSL_CTX *a = server_ctx(NULL, keys), *b = server_ctx(NULL, keys), *c = server_ctx(NULL, other_keys);
	check_resumes_only_at(a, b, c, client_ctx(TLS1_3_VERSION), 10 * TLS_TICKET_PERIOD);
}

int main(void)
{
	tls_tickets_set_clock(fake_clock);
	RUN(test_rotation_tls13);
	RUN(test_rotation_tls12);
	RUN(test_tls13_resumption_renews_the_ticket);
	RUN(test_rebuilt_context_resumes);
	RUN(test_fixed_ticket_keys);
	return unit_summary();
}
