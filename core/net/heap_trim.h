/* heap_trim — gives back to the kernel the heap that a burst of TLS
 * handshakes grew. Each handshake in flight holds tens of KiB (record
 * buffers, the handshake messages, key exchange temporaries) that it frees
 * when it ends; the connections that stay open keep small blocks scattered
 * through that heap, so glibc cannot shrink it from the top and the freed
 * pages stay resident. Once no handshake has been in flight for a moment
 * after a burst, malloc_trim(0) returns the wholly free pages inside the
 * heap (docs/tls.md: what it buys, measured). */
#ifndef LUASMTPD_HEAP_TRIM_H
#define LUASMTPD_HEAP_TRIM_H

#include <ev.h>

struct heap_trim {
	ev_timer timer;
	struct ev_loop *loop;
	unsigned busy; /* handshakes in flight */
	unsigned peak; /* the most in flight at once since the last trim */
};

void heap_trim_init(struct heap_trim *t, struct ev_loop *loop);
/* A handshake begins / has ended (completed, failed or abandoned). */
void heap_trim_enter(struct heap_trim *t);
void heap_trim_leave(struct heap_trim *t);
#endif
