/*
 * test_tls_context.c — unit tests for core/tls/tls_context.c, which builds
 * OpenSSL server contexts from a C struct tls_options with no Lua: the
 * development key and certificate, Node's defaults, client certificate
 * settings, and errors that name the option (key without cert, an unknown
 * minVersion, ticketKeys of the wrong size, an empty or unreadable ca).
 * Run from the repository root, after `make certs`.
 */
#include "tls/tls_context.h"
#include "unit.h"

#define DEV_KEY "certs/dev/localhost.key"
#define DEV_CERT "certs/dev/localhost.crt"

static struct tls_blob blob(const char *s)
{
	return (struct tls_blob){s, strlen(s)};
}

static struct tls_options dev_options(void)
{
	struct tls_options o;
	tls_options_init(&o);
	o.key = blob(DEV_KEY);
	o.cert = blob(DEV_CERT);
	return o;
}

#define CHECK_PREFIX(got, lit) CHECK_MEM((got), strlen(lit) <= strlen(got) ? strlen(lit) : strlen(got), lit)

static void test_dev_certificate_with_defaults(void)
{
	struct tls_options o = dev_options();
	char err[256] = "";
	SSL_CTX *ctx = tls_context_new(&o, err, sizeof err);
	CHECK(ctx != NULL);
	if (!ctx) {
		printf("     %s\n", err);
		return;
	}
	const struct tls_ctx_info *info = tls_context_info(ctx);
	CHECK(!info->request_cert && info->reject_unauthorized);
	CHECK(!info->own_request_cert && !info->own_reject_unauthorized && !info->own_ca);
	CHECK_INT(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
	CHECK_INT(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	CHECK(SSL_CTX_get_options(ctx) & SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_free(ctx);
}

static void test_client_certificates_required(void)
{
	struct tls_options o = dev_options();
	struct tls_blob ca[] = {blob(DEV_CERT)};
	o.request_cert = o.has_request_cert = true;
	o.ca = ca;
	o.nca = 1;
	o.has_ca = true;
	o.min_version = "TLSv1.3";
	char err[256] = "";
	SSL_CTX *ctx = tls_context_new(&o, err, sizeof err);
	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK_INT(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
	CHECK_INT(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(ctx)), 1);
	CHECK_INT(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
	CHECK(tls_context_info(ctx)->own_request_cert && tls_context_info(ctx)->own_ca);
	SSL_CTX_free(ctx);
}

static void test_errors_name_the_option(void)
{
	char err[256];
	struct tls_options o = dev_options();
	o.cert = (struct tls_blob){0};
	CHECK(tls_context_new(&o, err, sizeof err) == NULL);
	CHECK_PREFIX(err, "option 'cert': a TLS listener needs both key and cert (or pfx)");

	o = dev_options();
	o.min_version = "TLSv9";
	CHECK(tls_context_new(&o, err, sizeof err) == NULL);
	CHECK_PREFIX(err, "option 'minVersion': \"TLSv9\" is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3");

	o = dev_options();
	o.ticket_keys = blob("abc");
	CHECK(tls_context_new(&o, err, sizeof err) == NULL);
	CHECK_PREFIX(err, "option 'ticketKeys': expected 48 bytes, got 3");

	o = dev_options();
	o.key = blob("certs/dev/no-such.key");
	CHECK(tls_context_new(&o, err, sizeof err) == NULL);
	CHECK_PREFIX(err, "option 'key': cannot read a private key from certs/dev/no-such.key");
}

static void test_ca_store(void)
{
	char err[256];
	struct tls_blob ca[] = {blob(DEV_CERT), blob("certs/dev/no-such.crt")};
	X509_STORE *store = tls_ca_store(ca, 1, err, sizeof err);
	CHECK(store != NULL);
	X509_STORE_free(store);
	CHECK(tls_ca_store(ca, 0, err, sizeof err) == NULL);
	CHECK_STR(err, "option 'ca': no certificate given");
	CHECK(tls_ca_store(ca, 2, err, sizeof err) == NULL);
	CHECK_PREFIX(err, "option 'ca': cannot open certs/dev/no-such.crt");
}

int main(void)
{
	RUN(test_dev_certificate_with_defaults);
	RUN(test_client_certificates_required);
	RUN(test_errors_name_the_option);
	RUN(test_ca_store);
	return unit_summary();
}
