#include "lua/api_fsync.h"

#include "lua/lua_api.h"
#include "lua/modules.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int err = errno;
	close(fd);
	errno = err;
	return rc;
}

int fsync_parent_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return fsync_dir(".");
	char dir[PATH_MAX];
	size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x" is in "/" */
	if (n >= sizeof dir) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dir, path, n);
	dir[n] = '\0';
	return fsync_dir(dir);
}

/* dir(path) -> true | nil, err */
static int fsync_lua_dir(lua_State *L)
{
	if (fsync_dir(luaL_checkstring(L, 1)) != 0)
		return lua_api_fail(L, lua_api_errno(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* file(path) -> true | nil, err: a file written from Lua made durable */
static int fsync_lua_file(lua_State *L)
{
	int fd = open(luaL_checkstring(L, 1), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lua_api_fail(L, lua_api_errno(errno));
	int rc = fsync(fd);
	int err = errno;
	close(fd);
	if (rc != 0)
		return lua_api_fail(L, lua_api_errno(err));
	lua_pushboolean(L, 1);
	return 1;
}

int luaopen_smtp_fsync(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"dir", fsync_lua_dir},
		{"file", fsync_lua_file},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
