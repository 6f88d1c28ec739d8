#include "smtp/rcpt_set.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct rcpt_slot {
	char *key; /* lower-cased copy; NULL: free slot */
	size_t len;
	uint32_t hash;
	unsigned index;
};

static char ascii_lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
}

/* FNV-1a over the lower-cased bytes. */
static uint32_t rcpt_hash(const char *a, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)ascii_lower(a[i])) * 16777619u;
	return h;
}

static bool rcpt_same(const struct rcpt_slot *sl, uint32_t h, const char *a, size_t len)
{
	if (sl->hash != h || sl->len != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (sl->key[i] != ascii_lower(a[i]))
			return false;
	return true;
}

/* The slot holding address, or the free one where it would go. */
static struct rcpt_slot *rcpt_probe(struct rcpt_slot *slots, size_t cap, uint32_t h, const char *a,
                                    size_t len)
{
	for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
		if (!slots[i].key || rcpt_same(&slots[i], h, a, len))
			return &slots[i];
}

unsigned rcpt_set_find(const struct rcpt_set *s, const char *address, size_t len)
{
	if (!s->count)
		return 0;
	struct rcpt_slot *sl = rcpt_probe(s->slots, s->cap, rcpt_hash(address, len), address, len);
	return sl->key ? sl->index : 0;
}

/* Kept at most half full, so probes stay short. */
static void rcpt_grow(struct rcpt_set *s)
{
	size_t cap = s->cap ? s->cap * 2 : 16;
	struct rcpt_slot *slots = calloc(cap, sizeof *slots);
	if (!slots)
		abort();
	for (size_t i = 0; i < s->cap; i++) {
		struct rcpt_slot *old = &s->slots[i];
		if (old->key)
			*rcpt_probe(slots, cap, old->hash, old->key, old->len) = *old;
	}
	free(s->slots);
	s->slots = slots;
	s->cap = cap;
}

void rcpt_set_add(struct rcpt_set *s, const char *address, size_t len, unsigned index)
{
	if (2 * (s->count + 1) > s->cap)
		rcpt_grow(s);
	uint32_t h = rcpt_hash(address, len);
	struct rcpt_slot *sl = rcpt_probe(s->slots, s->cap, h, address, len);
	/* One allocation holds the key and, after it, the spelling: a repeat
	 * has the key's length, so a respelling is written in place. */
	if (!(sl->key = malloc(2 * (len + 1))))
		abort();
	for (size_t i = 0; i < len; i++)
		sl->key[i] = ascii_lower(address[i]);
	sl->key[len] = '\0';
	sl->len = len;
	sl->hash = h;
	sl->index = index;
	s->count++;
	if (index > s->spellings_cap) {
		size_t cap = s->spellings_cap ? 2 * s->spellings_cap : 16;
		cap = cap < index ? index : cap;
		if (!(s->spellings = realloc(s->spellings, cap * sizeof *s->spellings)))
			abort();
		s->spellings_cap = cap;
	}
	for (; s->nspellings < index; s->nspellings++)
		s->spellings[s->nspellings] = NULL;
	s->spellings[index - 1] = sl->key + len + 1;
	rcpt_set_respell(s, index, address, len);
}

void rcpt_set_respell(struct rcpt_set *s, unsigned index, const char *address, size_t len)
{
	memcpy(s->spellings[index - 1], address, len);
	s->spellings[index - 1][len] = '\0';
}

const char *rcpt_set_spelling(const struct rcpt_set *s, unsigned index)
{
	return index >= 1 && index <= s->nspellings ? s->spellings[index - 1] : NULL;
}

/* Frees the keys (and so the spellings), visiting the slots only until
 * each is found: this runs after every message. */
static void rcpt_set_free_keys(struct rcpt_set *s)
{
	for (size_t i = 0, left = s->count; left; i++)
		if (s->slots[i].key) {
			free(s->slots[i].key);
			left--;
		}
}

void rcpt_set_free(struct rcpt_set *s)
{
	rcpt_set_free_keys(s);
	free(s->slots);
	free(s->spellings);
	*s = (struct rcpt_set){0};
}

/* Arrays of up to this many slots stay for the next transaction, which
 * then allocates none (callgrind: a calloc and a realloc a message). */
#define RCPT_SET_KEEP 64

void rcpt_set_clear(struct rcpt_set *s)
{
	if (s->cap > RCPT_SET_KEEP) {
		rcpt_set_free(s);
		return;
	}
	rcpt_set_free_keys(s);
	if (s->count)
		memset(s->slots, 0, s->cap * sizeof *s->slots);
	s->count = 0;
	s->nspellings = 0;
}
