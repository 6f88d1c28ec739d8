#include "smtp/rcpt_set.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* index 0: a free slot. The key (lower-cased) and, after it, the spelling
 * are in the set's arena at off. */
struct rcpt_slot {
	uint32_t off;
	uint32_t len;
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

static bool rcpt_same(const struct rcpt_set *s, const struct rcpt_slot *sl, uint32_t h, const char *a,
                      size_t len)
{
	if (sl->hash != h || sl->len != len)
		return false;
	const char *key = s->arena + sl->off;
	for (size_t i = 0; i < len; i++)
		if (key[i] != ascii_lower(a[i]))
			return false;
	return true;
}

/* The slot holding address, or the free one where it would go. */
static struct rcpt_slot *rcpt_probe(const struct rcpt_set *s, struct rcpt_slot *slots, size_t cap, uint32_t h,
                                    const char *a, size_t len)
{
	for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
		if (!slots[i].index || rcpt_same(s, &slots[i], h, a, len))
			return &slots[i];
}

unsigned rcpt_set_find(const struct rcpt_set *s, const char *address, size_t len)
{
	if (!s->count)
		return 0;
	return rcpt_probe(s, s->slots, s->cap, rcpt_hash(address, len), address, len)->index;
}

static void *rcpt_realloc(void *p, size_t n)
{
	if (!(p = realloc(p, n)))
		abort();
	return p;
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
		if (!old->index)
			continue;
		size_t j = old->hash & (cap - 1); /* keys are unique: the first free slot */
		while (slots[j].index)
			j = (j + 1) & (cap - 1);
		slots[j] = *old;
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
	struct rcpt_slot *sl = rcpt_probe(s, s->slots, s->cap, h, address, len);
	/* The key and its spelling go in the arena, one transaction's
	 * addresses one after another: no allocation per recipient. A repeat
	 * has the key's length, so a respelling is written in place. */
	if (s->arena_len + 2 * (len + 1) > s->arena_cap) {
		size_t cap = s->arena_cap ? 2 * s->arena_cap : 256;
		while (cap < s->arena_len + 2 * (len + 1))
			cap *= 2;
		s->arena = rcpt_realloc(s->arena, cap);
		s->arena_cap = cap;
	}
	char *key = s->arena + s->arena_len;
	for (size_t i = 0; i < len; i++)
		key[i] = ascii_lower(address[i]);
	key[len] = '\0';
	*sl = (struct rcpt_slot){.off = (uint32_t)s->arena_len, .len = (uint32_t)len, .hash = h, .index = index};
	s->count++;
	if (index > s->spellings_cap) {
		size_t cap = s->spellings_cap ? 2 * s->spellings_cap : 16;
		cap = cap < index ? index : cap;
		s->spellings = rcpt_realloc(s->spellings, cap * sizeof *s->spellings);
		s->spellings_cap = cap;
	}
	for (; s->nspellings < index; s->nspellings++)
		s->spellings[s->nspellings] = 0;
	s->spellings[index - 1] = s->arena_len + len + 1;
	s->arena_len += 2 * (len + 1);
	rcpt_set_respell(s, index, address, len);
}

void rcpt_set_respell(struct rcpt_set *s, unsigned index, const char *address, size_t len)
{
	char *spelling = s->arena + s->spellings[index - 1];
	memcpy(spelling, address, len);
	spelling[len] = '\0';
}

const char *rcpt_set_spelling(const struct rcpt_set *s, unsigned index)
{
	if (index < 1 || index > s->nspellings || !s->spellings[index - 1])
		return NULL;
	return s->arena + s->spellings[index - 1];
}

void rcpt_set_free(struct rcpt_set *s)
{
	free(s->slots);
	free(s->spellings);
	free(s->arena);
	*s = (struct rcpt_set){0};
}

/* Arrays of up to this many slots, and an arena up to this size, stay
 * for the next transaction, which then allocates nothing (callgrind: a
 * calloc and a realloc a message, and a malloc and a free a recipient). */
#define RCPT_SET_KEEP 64
#define RCPT_ARENA_KEEP 4096

void rcpt_set_clear(struct rcpt_set *s)
{
	if (s->cap > RCPT_SET_KEEP || s->arena_cap > RCPT_ARENA_KEEP) {
		rcpt_set_free(s);
		return;
	}
	/* Only the slots in use are cleared, found one by one: this runs
	 * after every message, most of which have one recipient. */
	for (size_t i = 0, left = s->count; left; i++)
		if (s->slots[i].index) {
			s->slots[i].index = 0;
			left--;
		}
	s->count = 0;
	s->nspellings = 0;
	s->arena_len = 0;
}
