/* byte_table — a 256-entry table of F(c) for every byte value c, built at
 * compile time from a macro F: one lookup per byte where a scan would
 * otherwise test a chain of ranges (smtp_path.c's character classes,
 * log.c's value quoting). */
#ifndef LUASMTPD_BYTE_TABLE_H
#define LUASMTPD_BYTE_TABLE_H

#define BYTE_TABLE4(F, c) F(c), F((c) + 1), F((c) + 2), F((c) + 3)
#define BYTE_TABLE16(F, c) BYTE_TABLE4(F, c), BYTE_TABLE4(F, (c) + 4), BYTE_TABLE4(F, (c) + 8), BYTE_TABLE4(F, (c) + 12)
#define BYTE_TABLE64(F, c) BYTE_TABLE16(F, c), BYTE_TABLE16(F, (c) + 16), BYTE_TABLE16(F, (c) + 32), BYTE_TABLE16(F, (c) + 48)
#define BYTE_TABLE(F) {BYTE_TABLE64(F, 0), BYTE_TABLE64(F, 64), BYTE_TABLE64(F, 128), BYTE_TABLE64(F, 192)}

#endif
