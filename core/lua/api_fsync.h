/* api_fsync — making a file's name durable: fsync of a directory, which
 * Lua cannot do, for the core (stream:save) and for policies
 * (smtp.fsync_dir). A file's own fsync does not cover its directory entry:
 * after a crash a created or renamed file can be gone until the directory
 * is synced too. */
#ifndef LUASMTPD_LUA_API_FSYNC_H
#define LUASMTPD_LUA_API_FSYNC_H

/* fsync of the directory dir: 0, or -1 with errno set. */
int fsync_dir(const char *dir);
/* fsync of the directory that holds path ("." for a bare name). */
int fsync_parent_dir(const char *path);

#endif
