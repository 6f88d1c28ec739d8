/* api_dns — smtp.dns; and the errors.h string for a c-ares status, which
 * smtp.tcp's connect by name returns too. */
#ifndef LUASMTPD_LUA_API_DNS_H
#define LUASMTPD_LUA_API_DNS_H

const char *lua_dns_error(int status);

#endif
