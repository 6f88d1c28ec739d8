/* milter — the packets of the milter protocol (version 6, as Sendmail's
 * libmilter and Postfix's src/milter/milter8.c speak it): a 4-byte length
 * in network order, a command byte, then its data. This file writes the
 * MTA's commands and reads the milter's replies; it does no I/O, so it is
 * fuzzed as it is (tests/fuzz/fuzz_milter.c). */
#ifndef LUASMTPD_MILTER_H
#define LUASMTPD_MILTER_H

#include <stddef.h>
#include <stdint.h>

#define MILTER_VERSION 6
#define MILTER_HEADER 5 /* length + command byte */
/* A body chunk an MTA sends is at most this (libmilter's MILTER_CHUNK_SIZE:
 * no SMFIP_MDS_* larger sizes are offered). */
#define MILTER_CHUNK_MAX 65535
/* A reply longer than this is garbage: a replaced body comes in chunks no
 * larger than ours (SMFIP_MDS_1M is never offered), headers and texts are
 * far smaller. */
#define MILTER_PACKET_MAX (1024 * 1024)

/* The MTA's commands (SMFIC_*, mfdef.h). */
enum milter_command {
	MILTER_ABORT = 'A', MILTER_BODY = 'B', MILTER_CONNECT = 'C', MILTER_MACRO = 'D',
	MILTER_EOB = 'E', MILTER_HELO = 'H', MILTER_QUIT_NC = 'K', MILTER_HEADER_CMD = 'L',
	MILTER_MAIL = 'M', MILTER_EOH = 'N', MILTER_OPTNEG = 'O', MILTER_QUIT = 'Q',
	MILTER_RCPT = 'R', MILTER_DATA = 'T', MILTER_UNKNOWN = 'U',
};

/* The milter's replies (SMFIR_*). */
enum milter_reply_code {
	MILTER_R_ADDRCPT = '+', MILTER_R_DELRCPT = '-', MILTER_R_ADDRCPT_PAR = '2',
	MILTER_R_SHUTDOWN = '4', MILTER_R_ACCEPT = 'a', MILTER_R_REPLBODY = 'b',
	MILTER_R_CONTINUE = 'c', MILTER_R_DISCARD = 'd', MILTER_R_CHGFROM = 'e',
	MILTER_R_CONNFAIL = 'f', MILTER_R_ADDHEADER = 'h', MILTER_R_INSHEADER = 'i',
	MILTER_R_SETSYMLIST = 'l', MILTER_R_CHGHEADER = 'm', MILTER_R_PROGRESS = 'p',
	MILTER_R_QUARANTINE = 'q', MILTER_R_REJECT = 'r', MILTER_R_SKIP = 's',
	MILTER_R_TEMPFAIL = 't', MILTER_R_REPLYCODE = 'y', MILTER_R_OPTNEG = 'O',
};

/* Actions a milter may take (SMFIF_*), offered in OPTNEG. */
enum {
	MILTER_F_ADDHDRS = 0x1, MILTER_F_CHGBODY = 0x2, MILTER_F_ADDRCPT = 0x4,
	MILTER_F_DELRCPT = 0x8, MILTER_F_CHGHDRS = 0x10, MILTER_F_QUARANTINE = 0x20,
	MILTER_F_CHGFROM = 0x40, MILTER_F_ADDRCPT_PAR = 0x80, MILTER_F_SETSYMLIST = 0x100,
};

/* Protocol steps (SMFIP_*): NO* a step the milter does not want, NR_* a
 * step it will not answer. */
enum {
	MILTER_P_NOCONNECT = 0x1, MILTER_P_NOHELO = 0x2, MILTER_P_NOMAIL = 0x4,
	MILTER_P_NORCPT = 0x8, MILTER_P_NOBODY = 0x10, MILTER_P_NOHDRS = 0x20,
	MILTER_P_NOEOH = 0x40, MILTER_P_NR_HDR = 0x80, MILTER_P_NOUNKNOWN = 0x100,
	MILTER_P_NODATA = 0x200, MILTER_P_SKIP = 0x400, MILTER_P_RCPT_REJ = 0x800,
	MILTER_P_NR_CONN = 0x1000, MILTER_P_NR_HELO = 0x2000, MILTER_P_NR_MAIL = 0x4000,
	MILTER_P_NR_RCPT = 0x8000, MILTER_P_NR_DATA = 0x10000, MILTER_P_NR_UNKN = 0x20000,
	MILTER_P_NR_EOH = 0x40000, MILTER_P_NR_BODY = 0x80000, MILTER_P_HDR_LEADSPC = 0x100000,
};

/* The stages a macro list belongs to (SMFIM_*). */
enum { MILTER_STAGES = 7 };

/* A string to send: bytes and length (no NUL inside: the protocol ends
 * each string with one). */
struct milter_str {
	const char *s;
	size_t len;
};

/* Each writer puts one whole packet in out and returns its length, or 0
 * when it does not fit in cap or a string holds a NUL. */
size_t milter_encode_optneg(char *out, size_t cap, uint32_t version, uint32_t actions,
                            uint32_t protocol);
/* family: '4', '6', 'L' (unix) or 'U' (unknown: no port nor address sent). */
size_t milter_encode_connect(char *out, size_t cap, struct milter_str host, char family,
                             uint16_t port, struct milter_str addr);
/* A command whose data is n NUL-terminated strings: HELO (1), MAIL and
 * RCPT (the address then ESMTP args), HEADER (name, value); n = 0 for EOH,
 * EOB, ABORT, QUIT, DATA. */
size_t milter_encode_strings(char *out, size_t cap, char cmd, const struct milter_str *s, size_t n);
/* MACRO for the command `step`: n names and values, interleaved in nv. */
size_t milter_encode_macro(char *out, size_t cap, char step, const struct milter_str *nv, size_t n);
/* BODY: len at most MILTER_CHUNK_MAX (else 0); NULs are allowed. */
size_t milter_encode_body(char *out, size_t cap, const char *chunk, size_t len);

/* The length of the packet whose 4-byte header is hdr (command byte and
 * data), or 0 when it is 0 or over MILTER_PACKET_MAX. */
uint32_t milter_packet_len(const unsigned char hdr[4]);

/* One reply decoded; pointers point into the packet. */
struct milter_reply {
	char code;               /* enum milter_reply_code */
	uint32_t index;          /* INSHEADER/CHGHEADER: the index; SETSYMLIST: the stage */
	uint32_t version, actions, protocol; /* OPTNEG */
	struct milter_str a;     /* header name, recipient, sender, reply text, reason, macros, body */
	struct milter_str b;     /* header value, ESMTP args (len 0 when none) */
	int smtp_code;           /* REPLYCODE: 400..599 */
	/* OPTNEG: the macros the milter wants per stage (len 0: the default) */
	struct milter_str symlist[MILTER_STAGES];
};

/* Decodes one packet (command byte and data, without the length). Returns
 * 0, or -1 for an unknown code, a missing or extra string, a REPLYCODE that
 * is not a 4xx/5xx reply, or an OPTNEG that is short or names a stage twice
 * or beyond SMFIM_EOH. */
int milter_decode(struct milter_reply *r, const char *pkt, size_t len);

#endif
