/* milter — the milter protocol's packets (see milter.h). */
#include "proto/milter.h"

#include <string.h>

static void put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

static uint32_t get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* A packet being written: the header is filled in by finish(). */
struct writer {
	char *out;
	size_t cap, len;
	int bad;
};

static void add(struct writer *w, const void *p, size_t n)
{
	if (w->bad || n > w->cap - w->len) {
		w->bad = 1;
		return;
	}
	memcpy(w->out + w->len, p, n);
	w->len += n;
}

static void add_str(struct writer *w, struct milter_str s)
{
	if (memchr(s.s, '\0', s.len)) {
		w->bad = 1;
		return;
	}
	add(w, s.s, s.len);
	add(w, "", 1);
}

static void start(struct writer *w, char *out, size_t cap, char cmd)
{
	*w = (struct writer){.out = out, .cap = cap};
	add(w, "\0\0\0\0", 4);
	add(w, &cmd, 1);
}

static size_t finish(struct writer *w)
{
	if (w->bad)
		return 0;
	put32(w->out, (uint32_t)(w->len - 4));
	return w->len;
}

size_t milter_encode_optneg(char *out, size_t cap, uint32_t version, uint32_t actions,
                            uint32_t protocol)
{
	struct writer w;
	char v[12];
	put32(v, version);
	put32(v + 4, actions);
	put32(v + 8, protocol);
	start(&w, out, cap, MILTER_OPTNEG);
	add(&w, v, sizeof v);
	return finish(&w);
}

size_t milter_encode_connect(char *out, size_t cap, struct milter_str host, char family,
                             uint16_t port, struct milter_str addr)
{
	struct writer w;
	start(&w, out, cap, MILTER_CONNECT);
	add_str(&w, host);
	add(&w, &family, 1);
	if (family != 'U') {
		char p[2] = {(char)(port >> 8), (char)port};
		add(&w, p, 2);
		add_str(&w, addr);
	}
	return finish(&w);
}

size_t milter_encode_strings(char *out, size_t cap, char cmd, const struct milter_str *s, size_t n)
{
	struct writer w;
	start(&w, out, cap, cmd);
	for (size_t i = 0; i < n; i++)
		add_str(&w, s[i]);
	return finish(&w);
}

size_t milter_encode_macro(char *out, size_t cap, char step, const struct milter_str *nv, size_t n)
{
	struct writer w;
	start(&w, out, cap, MILTER_MACRO);
	add(&w, &step, 1);
	for (size_t i = 0; i < 2 * n; i++)
		add_str(&w, nv[i]);
	return finish(&w);
}

size_t milter_encode_body(char *out, size_t cap, const char *chunk, size_t len)
{
	struct writer w;
	if (len > MILTER_CHUNK_MAX)
		return 0;
	start(&w, out, cap, MILTER_BODY);
	add(&w, chunk, len);
	return finish(&w);
}

uint32_t milter_packet_len(const unsigned char hdr[4])
{
	uint32_t n = get32((const char *)hdr);
	return n > MILTER_PACKET_MAX ? 0 : n;
}

/* Reads a NUL-terminated string at *p (within end) into s. */
static int take_str(const char **p, const char *end, struct milter_str *s)
{
	const char *nul = memchr(*p, '\0', (size_t)(end - *p));
	if (!nul)
		return -1;
	*s = (struct milter_str){*p, (size_t)(nul - *p)};
	*p = nul + 1;
	return 0;
}

/* "ddd" of a 4xx or 5xx reply, then the end, a space or a '-' (a multiline
 * reply, its lines joined by CRLF as libmilter's smfi_setmlreply sends). */
static int reply_code(const struct milter_str *t)
{
	const char *s = t->s;
	if (t->len < 3 || (s[0] != '4' && s[0] != '5') || s[1] < '0' || s[1] > '5' || s[2] < '0' ||
	    s[2] > '9')
		return -1;
	if (t->len > 3 && s[3] != ' ' && s[3] != '-')
		return -1;
	return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

static int decode_optneg(struct milter_reply *r, const char *p, const char *end)
{
	if (end - p < 12)
		return -1;
	r->version = get32(p);
	r->actions = get32(p + 4);
	r->protocol = get32(p + 8);
	p += 12;
	while (p < end) {
		struct milter_str s;
		if (end - p < 4)
			return -1;
		uint32_t stage = get32(p);
		p += 4;
		if (stage >= MILTER_STAGES || r->symlist[stage].s || take_str(&p, end, &s))
			return -1;
		r->symlist[stage] = s;
	}
	return 0;
}

int milter_decode(struct milter_reply *r, const char *pkt, size_t len)
{
	*r = (struct milter_reply){0};
	if (len == 0)
		return -1;
	const char *p = pkt + 1, *end = pkt + len;
	r->code = pkt[0];
	switch (r->code) {
	case MILTER_R_ACCEPT: case MILTER_R_CONTINUE: case MILTER_R_DISCARD:
	case MILTER_R_REJECT: case MILTER_R_TEMPFAIL: case MILTER_R_PROGRESS:
	case MILTER_R_SKIP: case MILTER_R_SHUTDOWN: case MILTER_R_CONNFAIL:
		break;
	case MILTER_R_REPLBODY:
		r->a = (struct milter_str){p, (size_t)(end - p)};
		p = end;
		break;
	case MILTER_R_OPTNEG:
		return decode_optneg(r, p, end);
	case MILTER_R_ADDRCPT: case MILTER_R_DELRCPT: case MILTER_R_QUARANTINE:
		if (take_str(&p, end, &r->a))
			return -1;
		break;
	case MILTER_R_REPLYCODE:
		if (take_str(&p, end, &r->a) || (r->smtp_code = reply_code(&r->a)) < 0)
			return -1;
		break;
	case MILTER_R_ADDRCPT_PAR: case MILTER_R_CHGFROM:
		/* the ESMTP args are optional */
		if (take_str(&p, end, &r->a) || (p < end && take_str(&p, end, &r->b)))
			return -1;
		break;
	case MILTER_R_ADDHEADER:
		if (take_str(&p, end, &r->a) || take_str(&p, end, &r->b))
			return -1;
		break;
	case MILTER_R_INSHEADER: case MILTER_R_CHGHEADER:
		if (end - p < 4)
			return -1;
		r->index = get32(p);
		p += 4;
		if (take_str(&p, end, &r->a) || take_str(&p, end, &r->b))
			return -1;
		break;
	case MILTER_R_SETSYMLIST:
		if (end - p < 4)
			return -1;
		r->index = get32(p);
		p += 4;
		if (r->index >= MILTER_STAGES || take_str(&p, end, &r->a))
			return -1;
		break;
	default:
		return -1;
	}
	return p == end ? 0 : -1;
}
