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
	if (!(sl->key = malloc(len + 1)))
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
	rcpt_set_respell(s, index, address, len);
}

void rcpt_set_respell(struct rcpt_set *s, unsigned index, const char *address, size_t len)
{
	free(s->spellings[index - 1]);
	if (!(s->spellings[index - 1] = strndup(address, len)))
		abort();
}

const char *rcpt_set_spelling(const struct rcpt_set *s, unsigned index)
{
	return index >= 1 && index <= s->nspellings ? s->spellings[index - 1] : NULL;
}

void rcpt_set_clear(struct rcpt_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slots[i].key);
	free(s->slots);
	for (size_t i = 0; i < s->nspellings; i++)
		free(s->spellings[i]);
	free(s->spellings);
	*s = (struct rcpt_set){0};
}
