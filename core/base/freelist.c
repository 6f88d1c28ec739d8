#include "base/freelist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *freelist_alloc(struct freelist *fl)
{
	void *p = freelist_take(fl);
	if (p)
		return p;
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
