#include "base/freelist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *freelist_alloc(struct freelist *fl)
{
	void *p = fl->head;
	if (p) {
		memcpy(&fl->head, p, sizeof fl->head);
		fl->n--;
		return p;
	}
	p = malloc(fl->size);
	if (!p) {
		fputs("luasmtpd: out of memory\n", stderr);
		abort();
	}
	return p;
}

void *freelist_calloc(struct freelist *fl)
{
	return memset(freelist_alloc(fl), 0, fl->size);
}

void freelist_free(struct freelist *fl, void *p)
{
	if (!p)
		return;
	if (FREELIST_KEEPS && fl->n < fl->depth) {
		memcpy(p, &fl->head, sizeof fl->head);
		fl->head = p;
		fl->n++;
		return;
	}
	free(p);
}
