#include "proto/mime_tree.h"

#include <gmime/gmime.h>
#include <string.h>

/* Decoded bytes are read from a part's content this many at a time. */
#define READ_CHUNK 16384
/* Defects past this many are counted in one last defect. */
#define MAX_DEFECTS 100

/* One parse: its limits, what it has used of them, and its defects. */
struct walk {
	const struct mime_limits *lim;
	GMimeParserOptions *options;
	struct mime_msg *msg;
	size_t text_used;
	unsigned parts_seen;
	size_t dropped_defects;
	bool depth_reported, parts_reported, text_reported;
};

void mime_limits_default(struct mime_limits *lim)
{
	lim->max_text = 1024 * 1024;
	lim->max_total_text = 8 * 1024 * 1024;
	lim->max_depth = 100;
	lim->max_parts = 1000;
	lim->max_header_bytes = 1024 * 1024;
}

void mime_tree_init(void)
{
	static bool done;
	if (!done) {
		g_mime_init();
		done = true;
	}
}

static void defect(struct walk *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void defect(struct walk *w, const char *fmt, ...)
{
	struct mime_msg *m = w->msg;
	if (m->ndefects >= MAX_DEFECTS) {
		w->dropped_defects++;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	m->defects = g_renew(char *, m->defects, m->ndefects + 1);
	m->defects[m->ndefects++] = g_strdup_vprintf(fmt, ap);
	va_end(ap);
}

static const char *warning_text(GMimeParserWarning code)
{
	switch (code) {
	case GMIME_WARN_DUPLICATED_HEADER: return "duplicated header";
	case GMIME_WARN_DUPLICATED_PARAMETER: return "duplicated parameter";
	case GMIME_WARN_UNENCODED_8BIT_HEADER: return "unencoded 8-bit header";
	case GMIME_WARN_INVALID_CONTENT_TYPE: return "invalid content type";
	case GMIME_WARN_INVALID_RFC2047_HEADER_VALUE: return "invalid RFC 2047 header value";
	case GMIME_WARN_MALFORMED_MULTIPART: return "malformed multipart";
	case GMIME_WARN_TRUNCATED_MESSAGE: return "truncated message";
	case GMIME_WARN_MALFORMED_MESSAGE: return "malformed message";
	case GMIME_CRIT_INVALID_HEADER_NAME: return "invalid header name";
	case GMIME_CRIT_CONFLICTING_HEADER: return "conflicting header";
	case GMIME_CRIT_CONFLICTING_PARAMETER: return "conflicting parameter";
	case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY: return "multipart without boundary";
	case GMIME_WARN_INVALID_PARAMETER: return "invalid parameter";
	case GMIME_WARN_INVALID_ADDRESS_LIST: return "invalid address list";
	case GMIME_CRIT_NESTING_OVERFLOW: return "nesting too deep";
	case GMIME_WARN_PART_WITHOUT_CONTENT: return "part without content";
	case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT: return "part without headers or content";
	}
	return "malformed";
}

/* GMime's parser warnings are the message's defects. */
static void on_warning(gint64 offset, GMimeParserWarning code, const gchar *item, gpointer data)
{
	struct walk *w = data;
	char at[48] = "";
	if (offset >= 0)
		g_snprintf(at, sizeof at, " at byte %" G_GINT64_FORMAT, offset);
	if (item)
		defect(w, "%s (%.200s)%s", warning_text(code), item, at);
	else
		defect(w, "%s%s", warning_text(code), at);
}

static char *lower_dup(const char *s)
{
	return s ? g_ascii_strdown(s, -1) : NULL;
}

/* How many of the n bytes at p end on a whole UTF-8 sequence: a cut there
 * leaves no character half. */
static size_t utf8_whole(const char *p, size_t n)
{
	size_t i = n, back = 0;
	while (i > 0 && back < 4 && ((unsigned char)p[i - 1] & 0xC0) == 0x80) {
		i--;
		back++;
	}
	if (i == 0)
		return n;
	unsigned char lead = (unsigned char)p[i - 1];
	size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
	return back + 1 >= want ? n : i - 1;
}

/* iconv's UTF-8 is not strict (glibc lets sequences past U+10FFFF
 * through): what g_utf8_validate refuses becomes U+FFFD, one a byte, as
 * Python's errors="replace" has it; NUL stays, as it is UTF-8. */
static void utf8_repair(GString *s)
{
	const char *end;
	if (g_utf8_validate_len(s->str, s->len, NULL))
		return;
	GString *out = g_string_sized_new(s->len + 16);
	const char *p = s->str, *stop = s->str + s->len;
	while (p < stop) {
		g_utf8_validate_len(p, (gsize)(stop - p), &end);
		g_string_append_len(out, p, end - p);
		if (end >= stop)
			break;
		if (*end == 0)
			g_string_append_c(out, 0);
		else
			g_string_append(out, "\xEF\xBF\xBD");
		p = end + 1;
	}
	g_string_truncate(s, 0);
	g_string_append_len(s, out->str, (gssize)out->len);
	g_string_free(out, TRUE);
}

/* The text of one part as it is decoded: kept up to cap bytes. */
struct text_sink {
	GString *kept;
	size_t cap;
	bool over;
};

static void text_add(struct text_sink *t, const char *p, size_t n)
{
	size_t room = t->cap - t->kept->len;
	if (n > room) {
		t->over = true;
		n = room;
	}
	g_string_append_len(t->kept, p, (gssize)n);
}

/* Decoded bytes of a text part: through the charset converter when it
 * has one, else kept raw (decoded at the end, see part_text_done). */
static void text_feed(struct text_sink *t, GMimeFilter *conv, char *p, size_t n, bool last)
{
	if (t->over)
		return;
	if (conv) {
		char *out;
		size_t outlen, pre;
		if (last)
			g_mime_filter_complete(conv, p, n, 0, &out, &outlen, &pre);
		else
			g_mime_filter_filter(conv, p, n, 0, &out, &outlen, &pre);
		text_add(t, out, outlen);
	} else {
		text_add(t, p, n);
	}
}

/* The decoded bytes of a leaf: counted, and for a text part kept. */
static void content_feed(struct mime_part *p, struct text_sink *t, GMimeFilter *conv, char *buf, size_t n,
                         bool last)
{
	p->size += n;
	if (t)
		text_feed(t, conv, buf, n, last);
}

/* Text with no charset GMime can convert from: GMime's guess (UTF-8, else
 * ISO-8859-1), cut where it stops being within the cap. */
static void text_from_8bit(struct walk *w, struct text_sink *t, size_t cap)
{
	size_t n = t->kept->len;
	if (t->over)
		n = utf8_whole(t->kept->str, n);
	char *u = g_mime_utils_decode_8bit(w->options, t->kept->str, n);
	g_string_assign(t->kept, u);
	g_free(u);
	if (t->kept->len > cap) {
		t->over = true;
		g_string_truncate(t->kept, utf8_whole(t->kept->str, cap));
	}
}

static void part_text_done(struct walk *w, struct mime_part *p, struct text_sink *t, bool converted, size_t cap)
{
	if (!converted)
		text_from_8bit(w, t, cap);
	else if (t->over)
		g_string_truncate(t->kept, utf8_whole(t->kept->str, t->kept->len));
	utf8_repair(t->kept);
	if (t->kept->len > cap) {
		t->over = true;
		g_string_truncate(t->kept, utf8_whole(t->kept->str, cap));
	}
	p->truncated = t->over;
	p->text_len = t->kept->len;
	p->text = g_string_free(t->kept, FALSE);
	w->text_used += p->text_len;
	if (p->truncated && w->text_used >= w->lim->max_total_text && !w->text_reported) {
		w->text_reported = true;
		defect(w, "text over %zu bytes in all left out", w->lim->max_total_text);
	}
}

/* Does a chunk of base64 hold bytes outside its alphabet? GMime's decoder
 * skips them; Python's email calls that a defect too. */
static bool base64_invalid(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!g_ascii_isalnum(c) && c != '+' && c != '/' && c != '=' && !g_ascii_isspace(c))
			return true;
	}
	return false;
}

/* Decodes a leaf's content as it streams: size always, text for text/ *. */
static void part_content(struct walk *w, GMimePart *gp, struct mime_part *p)
{
	GMimeDataWrapper *dw = g_mime_part_get_content(gp);
	struct text_sink sink, *t = NULL;
	GMimeFilter *conv = NULL;
	size_t cap = 0;
	if (p->is_text) {
		size_t left = w->lim->max_total_text - w->text_used;
		cap = w->lim->max_text < left ? w->lim->max_text : left;
		if (p->charset)
			conv = g_mime_filter_charset_new(p->charset, "UTF-8");
		/* raw 8-bit text is kept a little over: its UTF-8 is cut later */
		sink = (struct text_sink){g_string_new(NULL), conv ? cap : cap + 4, false};
		t = &sink;
		if (p->charset && !conv)
			defect(w, "unknown charset %.100s", p->charset);
	}
	GMimeStream *src = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
	if (src) {
		GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(dw);
		GMimeFilter *decoder = NULL;
		if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
		    enc == GMIME_CONTENT_ENCODING_UUENCODE)
			decoder = g_mime_filter_basic_new(enc, FALSE);
		char buf[READ_CHUNK];
		g_mime_stream_reset(src);
		ssize_t n;
		bool invalid = false;
		while ((n = g_mime_stream_read(src, buf, sizeof buf)) > 0) {
			if (enc == GMIME_CONTENT_ENCODING_BASE64 && !invalid && base64_invalid(buf, (size_t)n)) {
				invalid = true;
				defect(w, "invalid base64 characters in a %s part", p->type);
			}
			char *out = buf;
			size_t outlen = (size_t)n, pre;
			if (decoder)
				g_mime_filter_filter(decoder, buf, (size_t)n, 0, &out, &outlen, &pre);
			content_feed(p, t, conv, out, outlen, false);
		}
		if (n < 0)
			defect(w, "content of a %s part unreadable", p->type);
		char *out = buf;
		size_t outlen = 0, pre;
		if (decoder) {
			g_mime_filter_complete(decoder, buf, 0, 0, &out, &outlen, &pre);
			g_object_unref(decoder);
		}
		content_feed(p, t, conv, out, outlen, true);
		g_mime_stream_reset(src);
	}
	if (t)
		part_text_done(w, p, t, conv != NULL, cap);
	if (conv)
		g_object_unref(conv);
}

static void part_params(struct mime_part *p, GMimeContentType *ct)
{
	GMimeParamList *list = g_mime_content_type_get_parameters(ct);
	int n = list ? g_mime_param_list_length(list) : 0;
	if (n <= 0)
		return;
	p->params = g_new0(struct mime_param, (size_t)n);
	for (int i = 0; i < n; i++) {
		GMimeParam *param = g_mime_param_list_get_parameter_at(list, i);
		const char *name = g_mime_param_get_name(param);
		if (!name)
			continue;
		p->params[p->nparams].name = lower_dup(name);
		p->params[p->nparams].value = g_strdup(g_mime_param_get_value(param));
		p->nparams++;
	}
}

/* What every part has, from its headers. */
static void part_head(GMimeObject *obj, struct mime_part *p)
{
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	char *type = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
	p->type = lower_dup(type ? type : "text/plain");
	g_free(type);
	if (ct)
		part_params(p, ct);
	p->charset = lower_dup(ct ? g_mime_content_type_get_parameter(ct, "charset") : NULL);
	GMimeContentDisposition *disp = g_mime_object_get_content_disposition(obj);
	const char *d = disp ? g_mime_content_disposition_get_disposition(disp) : NULL;
	p->disposition = d && *d ? lower_dup(d) : NULL;
	/* g_mime_part_get_filename's rule, for every kind of part */
	const char *name = disp ? g_mime_content_disposition_get_parameter(disp, "filename") : NULL;
	if (!name && ct)
		name = g_mime_content_type_get_parameter(ct, "name");
	p->filename = g_strdup(name);
	const char *cte = g_mime_object_get_header(obj, "Content-Transfer-Encoding");
	if (cte) {
		GMimeContentEncoding enc = g_mime_content_encoding_from_string(cte);
		p->encoding = enc != GMIME_CONTENT_ENCODING_DEFAULT ? g_strdup(g_mime_content_encoding_to_string(enc))
		                                                    : g_strstrip(lower_dup(cte));
	}
}

static void walk_part(struct walk *w, GMimeObject *obj, struct mime_part *p, unsigned depth);

/* The children of a multipart or message/rfc822 part, as far as the limits go. */
static void walk_children(struct walk *w, GMimeObject *obj, struct mime_part *p, unsigned depth)
{
	p->container = true;
	int n = 0;
	GMimeObject *only = NULL;
	if (GMIME_IS_MULTIPART(obj)) {
		n = g_mime_multipart_get_count((GMimeMultipart *)obj);
	} else {
		GMimeMessage *inner = g_mime_message_part_get_message((GMimeMessagePart *)obj);
		only = inner ? g_mime_message_get_mime_part(inner) : NULL;
		n = only ? 1 : 0;
	}
	if (n <= 0)
		return;
	if (depth + 1 > w->lim->max_depth) {
		if (!w->depth_reported)
			defect(w, "parts nested deeper than %u levels left out", w->lim->max_depth);
		w->depth_reported = true;
		return;
	}
	p->parts = g_new0(struct mime_part, (size_t)n);
	for (int i = 0; i < n; i++) {
		if (w->parts_seen >= w->lim->max_parts) {
			if (!w->parts_reported)
				defect(w, "parts past %u left out", w->lim->max_parts);
			w->parts_reported = true;
			return;
		}
		GMimeObject *child = only ? only : g_mime_multipart_get_part((GMimeMultipart *)obj, i);
		walk_part(w, child, &p->parts[p->nparts++], depth + 1);
	}
}

static void walk_part(struct walk *w, GMimeObject *obj, struct mime_part *p, unsigned depth)
{
	w->parts_seen++;
	part_head(obj, p);
	if (GMIME_IS_MULTIPART(obj) || GMIME_IS_MESSAGE_PART(obj)) {
		walk_children(w, obj, p, depth);
	} else if (GMIME_IS_PART(obj)) {
		p->leaf = true;
		p->is_text = g_str_has_prefix(p->type, "text/");
		part_content(w, (GMimePart *)obj, p);
	}
}

/* A field's raw value as Python's email reads it: leading blanks and the
 * final line end dropped, folding kept. */
static char *raw_value(const char *raw)
{
	raw = raw ? raw : "";
	raw += strspn(raw, " \t");
	size_t n = strlen(raw);
	while (n > 0 && (raw[n - 1] == '\n' || raw[n - 1] == '\r'))
		n--;
	return g_strndup(raw, n);
}

static void headers_add(GPtrArray *all, GMimeObject *obj)
{
	GMimeHeaderList *list = obj ? g_mime_object_get_header_list(obj) : NULL;
	int n = list ? g_mime_header_list_get_count(list) : 0;
	for (int i = 0; i < n; i++)
		g_ptr_array_add(all, g_mime_header_list_get_header_at(list, i));
}

static gint header_order(gconstpointer a, gconstpointer b)
{
	gint64 x = g_mime_header_get_offset(*(GMimeHeader *const *)a);
	gint64 y = g_mime_header_get_offset(*(GMimeHeader *const *)b);
	return x < y ? -1 : x > y;
}

/* The message's fields in the order they came: GMime keeps the Content-*
 * ones on the root part, the others on the message. */
static void walk_headers(struct walk *w, GMimeObject *message, GMimeObject *root)
{
	GPtrArray *all = g_ptr_array_new();
	headers_add(all, message);
	headers_add(all, root);
	g_ptr_array_sort(all, header_order);
	struct mime_msg *m = w->msg;
	m->headers = g_new0(struct mime_header, all->len ? all->len : 1);
	size_t bytes = 0;
	for (guint i = 0; i < all->len; i++) {
		GMimeHeader *h = g_ptr_array_index(all, i);
		const char *name = g_mime_header_get_name(h), *raw = g_mime_header_get_raw_value(h);
		bytes += strlen(name ? name : "") + strlen(raw ? raw : "");
		if (bytes > w->lim->max_header_bytes) {
			defect(w, "header fields past %zu bytes left out", w->lim->max_header_bytes);
			break;
		}
		struct mime_header *out = &m->headers[m->nheaders++];
		out->name = g_strdup(name ? name : "");
		out->value = g_strdup(g_mime_header_get_value(h));
		if (!out->value)
			out->value = g_strdup("");
		out->raw = raw_value(raw);
	}
	g_ptr_array_free(all, TRUE);
}

void mime_tree_parse_stream(GMimeStream *stream, const struct mime_limits *lim, struct mime_msg *msg)
{
	memset(msg, 0, sizeof *msg);
	struct walk w = {.lim = lim, .msg = msg};
	w.options = g_mime_parser_options_new();
	g_mime_parser_options_set_warning_callback(w.options, on_warning, &w);
	GMimeParser *parser = g_mime_parser_new_with_stream(stream);
	/* parts stay offsets into the stream: bodies are read only to decode */
	g_mime_parser_set_persist_stream(parser, TRUE);
	GMimeMessage *message = g_mime_parser_construct_message(parser, w.options);
	GMimeObject *root = message ? g_mime_message_get_mime_part(message) : NULL;
	if (message)
		walk_headers(&w, (GMimeObject *)message, root);
	else
		defect(&w, "no message: no header fields");
	if (root) {
		walk_part(&w, root, &msg->root, 0);
	} else {
		/* as Python's email has it: a message without a body is empty text */
		msg->root = (struct mime_part){.type = g_strdup("text/plain"), .leaf = true, .is_text = true,
		                               .text = g_strdup("")};
	}
	if (w.dropped_defects) {
		w.msg->ndefects--;
		g_free(msg->defects[msg->ndefects]);
		defect(&w, "%zu more defects", w.dropped_defects + 1);
	}
	if (message)
		g_object_unref(message);
	g_object_unref(parser);
	g_mime_parser_options_free(w.options);
}

/* The bytes are handed to GMime as a GByteArray it does not own, taken
 * back unchanged before it is freed: a memory stream over them without a
 * copy. GMime's parser and substreams only read them. */
void mime_tree_parse_buffer(const char *data, size_t len, const struct mime_limits *lim, struct mime_msg *msg)
{
	GByteArray *bytes = g_byte_array_new_take((guint8 *)data, len);
	GMimeStream *stream = g_mime_stream_mem_new_with_byte_array(bytes);
	g_mime_stream_mem_set_owner((GMimeStreamMem *)stream, FALSE);
	mime_tree_parse_stream(stream, lim, msg);
	g_object_unref(stream);
	g_byte_array_steal(bytes, NULL);
	g_byte_array_unref(bytes);
}

static void part_free(struct mime_part *p)
{
	g_free(p->type);
	for (size_t i = 0; i < p->nparams; i++) {
		g_free(p->params[i].name);
		g_free(p->params[i].value);
	}
	g_free(p->params);
	g_free(p->disposition);
	g_free(p->filename);
	g_free(p->encoding);
	g_free(p->charset);
	g_free(p->text);
	for (size_t i = 0; i < p->nparts; i++)
		part_free(&p->parts[i]);
	g_free(p->parts);
}

void mime_msg_free(struct mime_msg *msg)
{
	for (size_t i = 0; i < msg->nheaders; i++) {
		g_free(msg->headers[i].name);
		g_free(msg->headers[i].value);
		g_free(msg->headers[i].raw);
	}
	g_free(msg->headers);
	part_free(&msg->root);
	for (size_t i = 0; i < msg->ndefects; i++)
		g_free(msg->defects[i]);
	g_free(msg->defects);
	memset(msg, 0, sizeof *msg);
}

static void addresses_add(InternetAddressList *list, GArray *out)
{
	int n = internet_address_list_length(list);
	for (int i = 0; i < n; i++) {
		InternetAddress *ia = internet_address_list_get_address(list, i);
		if (INTERNET_ADDRESS_IS_GROUP(ia)) {
			addresses_add(internet_address_group_get_members((InternetAddressGroup *)ia), out);
			continue;
		}
		const char *name = internet_address_get_name(ia);
		const char *addr = internet_address_mailbox_get_addr((InternetAddressMailbox *)ia);
		struct mime_address a = {
			.name = name && *name ? g_strdup(name) : NULL,
			.address = g_strdup(addr ? addr : ""),
		};
		g_array_append_val(out, a);
	}
}

struct mime_address *mime_addresses_parse(const char *raw, size_t *n)
{
	GArray *out = g_array_new(FALSE, TRUE, sizeof(struct mime_address));
	InternetAddressList *list = internet_address_list_parse(NULL, raw);
	if (list) {
		addresses_add(list, out);
		g_object_unref(list);
	}
	*n = out->len;
	return (struct mime_address *)g_array_free(out, FALSE);
}

void mime_addresses_free(struct mime_address *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		g_free(a[i].name);
		g_free(a[i].address);
	}
	g_free(a);
}
