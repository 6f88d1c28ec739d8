#include "base/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first allocation: most messages fit, and doubling takes the rest. */
#define SPOOL_MEMORY_FIRST 4096

void spool_init(struct spool *sp, size_t memory_max, const char *dir)
{
	*sp = (struct spool){.memory_max = memory_max, .dir = dir, .fd = -1};
}

/* Writes all of data at offset: 0 or an errno. By offset, so a failed
 * write leaves nothing to undo: what it wrote lies past the size, and the
 * next write covers it. */
static int write_at(int fd, const char *data, size_t len, uint64_t offset)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, data, len, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		data += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

/* An unlinked file in the spool's directory, or -1 with errno: nothing to
 * clean up after a crash, and no name another process could open. */
static int open_unlinked(const struct spool *sp)
{
	const char *dir = sp->dir ? sp->dir : getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/luasmtpd-spool-XXXXXX", dir) >= (int)sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	return fd;
}

/* The bytes so far go to a new file: 0 or an errno (and then they are
 * still in memory). */
static int spill(struct spool *sp)
{
	int fd = open_unlinked(sp);
	if (fd < 0)
		return errno;
	int err = write_at(fd, sp->mem, (size_t)sp->size, 0);
	if (err) {
		close(fd);
		return err;
	}
	free(sp->mem);
	sp->mem = NULL;
	sp->cap = 0;
	sp->fd = fd;
	return 0;
}

static int grow(struct spool *sp, size_t need)
{
	size_t cap = sp->cap ? sp->cap : SPOOL_MEMORY_FIRST;
	while (cap < need)
		cap *= 2;
	if (cap > sp->memory_max)
		cap = sp->memory_max;
	char *mem = realloc(sp->mem, cap);
	if (!mem)
		return ENOMEM;
	sp->mem = mem;
	sp->cap = cap;
	return 0;
}

int spool_write(struct spool *sp, const void *data, size_t len)
{
	if (sp->fd < 0 && sp->size + len <= sp->memory_max) {
		size_t need = (size_t)sp->size + len;
		if (need > sp->cap) {
			int err = grow(sp, need);
			if (err)
				return err;
		}
		if (len) /* data may be NULL then */
			memcpy(sp->mem + sp->size, data, len);
		sp->size = need;
		return 0;
	}
	if (sp->fd < 0) {
		int err = spill(sp);
		if (err)
			return err;
	}
	int err = write_at(sp->fd, data, len, sp->size);
	if (!err)
		sp->size += len;
	return err;
}

ssize_t spool_read(const struct spool *sp, uint64_t offset, void *dst, size_t len)
{
	if (offset >= sp->size)
		return 0;
	if (len > sp->size - offset)
		len = (size_t)(sp->size - offset);
	if (sp->fd < 0) {
		memcpy(dst, sp->mem + offset, len);
		return (ssize_t)len;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(sp->fd, (char *)dst + got, len - got, (off_t)(offset + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) /* the file is shorter than what was written to it */
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

void spool_free(struct spool *sp)
{
	free(sp->mem);
	if (sp->fd >= 0)
		close(sp->fd);
	spool_init(sp, sp->memory_max, sp->dir);
}
