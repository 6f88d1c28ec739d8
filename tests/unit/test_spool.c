/*
 * test_spool.c — the message spool (core/base/spool.c): bytes stay in
 * memory up to the limit and move to an unlinked file in the spool's
 * directory ($TMPDIR by default) with the first byte past it; reads from
 * any offset give back what was written, across the switch too; a file
 * that cannot be made or written (a full disk, here RLIMIT_FSIZE) fails
 * the write with its errno and leaves the spool as it was.
 */
#include "base/spool.h"
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define LIMIT 1000

static char dir[] = "/tmp/test_spool-XXXXXX";
static char pattern[4 * LIMIT];

/* Entries in the test's directory but . and .. */
static int dir_entries(void)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

/* Reads [off, off + len) back and compares it with the pattern. */
static int reads_back(const struct spool *sp, uint64_t off, size_t len)
{
	char got[sizeof pattern];
	ssize_t n = spool_read(sp, off, got, len);
	return n == (ssize_t)len && memcmp(got, pattern + off, len) == 0;
}

static void test_memory_up_to_the_limit(void)
{
	struct spool sp;
	spool_init(&sp, LIMIT, dir);
	CHECK(spool_memory(&sp) != NULL); /* empty, in memory */
	CHECK_INT(sp.size, 0);
	CHECK_INT(spool_write(&sp, pattern, 600), 0);
	CHECK_INT(spool_write(&sp, pattern + 600, LIMIT - 600), 0);
	CHECK_INT(sp.size, LIMIT);
	CHECK_INT(spool_fd(&sp), -1);
	CHECK(spool_memory(&sp) && memcmp(spool_memory(&sp), pattern, LIMIT) == 0);
	CHECK(reads_back(&sp, 0, LIMIT));
	CHECK_INT(dir_entries(), 0);
	spool_free(&sp);
}

/* One byte past the limit and everything is in the file, read back
 * whole from any offset: reads that cross the old boundary included. */
static void test_to_file_one_byte_past_the_limit(void)
{
	struct spool sp;
	spool_init(&sp, LIMIT, dir);
	CHECK_INT(spool_write(&sp, pattern, LIMIT), 0);
	CHECK_INT(spool_write(&sp, pattern + LIMIT, 1), 0);
	CHECK(spool_fd(&sp) >= 0);
	CHECK(spool_memory(&sp) == NULL);
	CHECK_INT(sp.size, LIMIT + 1);
	/* unlinked: nothing left in the directory to clean up */
	CHECK_INT(dir_entries(), 0);
	while (sp.size < sizeof pattern) { /* the rest in small writes */
		size_t n = sizeof pattern - sp.size < 7 ? sizeof pattern - sp.size : 7;
		if (spool_write(&sp, pattern + sp.size, n))
			break;
	}
	CHECK_INT(sp.size, sizeof pattern);
	for (uint64_t off = LIMIT - 20; off <= LIMIT + 20; off++)
		CHECK(reads_back(&sp, off, 40));
	CHECK(reads_back(&sp, 0, (size_t)sp.size));
	char buf[64];
	/* a read past the end is cut at the end, one at or after it is 0 */
	CHECK_INT(spool_read(&sp, sp.size - 5, buf, sizeof buf), 5);
	CHECK_INT(spool_read(&sp, sp.size, buf, sizeof buf), 0);
	CHECK_INT(spool_read(&sp, sp.size + 100, buf, sizeof buf), 0);
	spool_free(&sp);
	CHECK_INT(spool_fd(&sp), -1);
	CHECK_INT(sp.size, 0);
}

/* A first write bigger than the limit goes straight to the file. */
static void test_first_write_past_the_limit(void)
{
	struct spool sp;
	spool_init(&sp, LIMIT, dir);
	CHECK_INT(spool_write(&sp, pattern, 2 * LIMIT), 0);
	CHECK(spool_fd(&sp) >= 0);
	CHECK(reads_back(&sp, 0, 2 * LIMIT));
	spool_free(&sp);
	/* and a freed spool is empty and usable again, in memory */
	CHECK_INT(spool_write(&sp, pattern, 10), 0);
	CHECK_INT(spool_fd(&sp), -1);
	CHECK(reads_back(&sp, 0, 10));
	spool_free(&sp);
}

/* No directory given: the file goes to $TMPDIR, unlinked at once. */
static void test_file_in_tmpdir(void)
{
	char *old = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
	setenv("TMPDIR", dir, 1);
	struct spool sp;
	spool_init(&sp, LIMIT, NULL);
	CHECK_INT(spool_write(&sp, pattern, LIMIT + 1), 0);
	char link[64], target[512];
	snprintf(link, sizeof link, "/proc/self/fd/%d", spool_fd(&sp));
	ssize_t n = readlink(link, target, sizeof target - 1);
	CHECK(n > 0);
	target[n > 0 ? n : 0] = '\0';
	CHECK(strncmp(target, dir, strlen(dir)) == 0);
	CHECK(strstr(target, " (deleted)") != NULL);
	spool_free(&sp);
	if (old)
		setenv("TMPDIR", old, 1);
	else
		unsetenv("TMPDIR");
	free(old);
}

/* A directory that is not there: the write past the limit fails with
 * ENOENT, the bytes before it are still there, in memory. */
static void test_no_file_keeps_memory(void)
{
	struct spool sp;
	spool_init(&sp, LIMIT, "/nonexistent/luasmtpd-test_spool");
	CHECK_INT(spool_write(&sp, pattern, LIMIT - 1), 0);
	CHECK_INT(spool_write(&sp, pattern + LIMIT - 1, 2), ENOENT);
	CHECK_INT(sp.size, LIMIT - 1);
	CHECK_INT(spool_fd(&sp), -1);
	CHECK(reads_back(&sp, 0, LIMIT - 1));
	CHECK_INT(spool_write(&sp, pattern + LIMIT - 1, 1), 0); /* up to the limit still fits */
	CHECK(reads_back(&sp, 0, LIMIT));
	spool_free(&sp);
}

/* The disk fills (RLIMIT_FSIZE stands for it: no root needed): the write
 * that does not fit fails with the errno, the spool keeps its size and
 * bytes, and a write that fits goes on from there. */
static void test_full_disk(void)
{
	struct rlimit old;
	getrlimit(RLIMIT_FSIZE, &old);
	struct rlimit lim = {2 * LIMIT, old.rlim_max};
	void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
	CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct spool sp;
	spool_init(&sp, LIMIT, dir);
	CHECK_INT(spool_write(&sp, pattern, 3 * LIMIT / 2), 0);
	CHECK_INT(spool_write(&sp, pattern + 3 * LIMIT / 2, LIMIT), EFBIG);
	CHECK_INT(sp.size, 3 * LIMIT / 2);
	CHECK(reads_back(&sp, 0, 3 * LIMIT / 2));
	CHECK_INT(spool_write(&sp, pattern + 3 * LIMIT / 2, 100), 0);
	CHECK_INT(sp.size, 3 * LIMIT / 2 + 100);
	CHECK(reads_back(&sp, 0, 3 * LIMIT / 2 + 100));
	spool_free(&sp);
	/* a file that cannot even take the bytes from memory: all stay there */
	lim.rlim_cur = LIMIT / 2;
	CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
	spool_init(&sp, LIMIT, dir);
	CHECK_INT(spool_write(&sp, pattern, LIMIT), 0);
	CHECK_INT(spool_write(&sp, pattern + LIMIT, 1), EFBIG);
	CHECK_INT(spool_fd(&sp), -1);
	CHECK(reads_back(&sp, 0, LIMIT));
	spool_free(&sp);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, was);
	CHECK_INT(dir_entries(), 0);
}

int main(void)
{
	for (size_t i = 0; i < sizeof pattern; i++)
		pattern[i] = (char)(i * 31 + i / 251);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_memory_up_to_the_limit);
	RUN(test_to_file_one_byte_past_the_limit);
	RUN(test_first_write_past_the_limit);
	RUN(test_file_in_tmpdir);
	RUN(test_no_file_keeps_memory);
	RUN(test_full_disk);
	rmdir(dir);
	return unit_summary();
}
