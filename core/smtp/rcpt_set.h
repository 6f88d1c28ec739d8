/* rcpt_set — the recipients of one mail transaction, by address, so that
 * a repeated RCPT is found in O(1) rather than by scanning the envelope
 * (issue 15: 60k pipelined RCPTs were quadratic). Addresses compare as
 * the envelope always compared them: ASCII case-insensitively. */
#ifndef LUASMTPD_RCPT_SET_H
#define LUASMTPD_RCPT_SET_H

#include <stddef.h>
#include <stdint.h>

struct rcpt_slot;

struct rcpt_set {
	struct rcpt_slot *slots; /* open addressing; NULL while empty */
	size_t cap;              /* a power of two, or 0 */
	size_t count;
	size_t *spellings;       /* by index - 1: where in the arena the address as last given is; 0: none */
	size_t nspellings;
	size_t spellings_cap;
	char *arena; /* each address's lower-cased key, then its spelling */
	size_t arena_len, arena_cap;
};

/* The index given with address when it was added, or 0 if it is not in. */
unsigned rcpt_set_find(const struct rcpt_set *s, const char *address, size_t len);
/* Adds address (not in the set yet) with its index (> 0). */
void rcpt_set_add(struct rcpt_set *s, const char *address, size_t len, unsigned index);
/* A repeat (found at index, so of the same length) replaces the spelling
 * kept for it. */
void rcpt_set_respell(struct rcpt_set *s, unsigned index, const char *address, size_t len);
/* The address at index as last given, or NULL; valid until the next
 * add, clear or free. */
const char *rcpt_set_spelling(const struct rcpt_set *s, unsigned index);
/* Empties the set for the next transaction (small arrays are kept). */
void rcpt_set_clear(struct rcpt_set *s);
/* Empties the set and frees its memory. */
void rcpt_set_free(struct rcpt_set *s);

#endif
