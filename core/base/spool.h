/* spool — a message's bytes as they come, read back from any offset: in
 * memory up to a limit, past it in an unlinked temporary file. A small
 * message never costs a file (creating and dropping one costs more CPU
 * than a small message's whole milter conversation), a large one never
 * costs its size in memory. lua/api_spool.c is its Lua face
 * (smtp.core.spool), which declared milters and smtp.mime spool with. */
#ifndef LUASMTPD_SPOOL_H
#define LUASMTPD_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct spool {
	char *mem;         /* the bytes while they fit in memory */
	size_t cap;        /* mem's allocation */
	size_t memory_max; /* bytes kept in memory at most */
	const char *dir;   /* the file's directory; NULL: $TMPDIR, else /tmp */
	int fd;            /* the file once the bytes outgrew memory, else -1 */
	uint64_t size;     /* bytes written */
};

/* An empty spool; dir must outlive it (NULL: $TMPDIR when the file is
 * made, else /tmp). Nothing is allocated yet. */
void spool_init(struct spool *sp, size_t memory_max, const char *dir);
/* Appends len bytes: 0, or an errno (the file could not be made, or
 * written: ENOSPC on a full disk), and then none of them was appended and
 * the spool holds what it held. */
int spool_write(struct spool *sp, const void *data, size_t len);
/* Copies up to len bytes from offset into dst: how many (0 at or past the
 * end), or -1 with errno. */
ssize_t spool_read(const struct spool *sp, uint64_t offset, void *dst, size_t len);
/* The file's descriptor (for a reader of its own: the spool reads and
 * writes by offset, never moving the descriptor's), or -1 while every
 * byte is in memory and spool_memory has them. */
static inline int spool_fd(const struct spool *sp) { return sp->fd; }
/* The size bytes while they are in memory, else NULL. */
static inline const char *spool_memory(const struct spool *sp)
{
	return sp->fd >= 0 ? NULL : sp->mem ? sp->mem : "";
}
/* Frees the memory, closes the file (which goes with it); the spool is
 * then empty, as after spool_init. */
void spool_free(struct spool *sp);

#endif
