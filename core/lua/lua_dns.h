/* lua_dns — smtp.dns: query(name, type) for A, AAAA, MX, TXT and PTR from
 * a hook, suspending only that hook; configure{servers, timeout, tries}. */
#ifndef LUASMTPD_LUA_DNS_H
#define LUASMTPD_LUA_DNS_H

#include <lua.h>

/* Adds dns_query and dns_configure to the smtp.core table at the top of L. */
void lua_dns_register(lua_State *L);
/* Pushes the records of a raw answer as a Lua array (see lua_dns.c);
 * returns false (nothing pushed) when the answer does not parse. */
int lua_dns_push_records(lua_State *L, int type, const unsigned char *abuf, int alen);

#endif
