/* api_digest — the digests and encodings of lua-nginx-module's ngx.* that
 * pure-Lua libraries call (lua/smtp/ngx.lua assembles them): md5, sha1,
 * hmac-sha1 from OpenSSL's EVP, crc32 from zlib, and base64 with nginx's
 * own rules (its decoder is lax about padding, so the strict SASL decoder
 * of proto/ does not fit). */
#include "lua/lua_api.h"
#include "lua/modules.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdbool.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* lua-nginx-module takes nil for "" in the digest and encode functions. */
static const char *digest_bytes(lua_State *L, int idx, size_t *len)
{
	if (lua_isnil(L, idx)) {
		*len = 0;
		return "";
	}
	return luaL_checklstring(L, idx, len);
}

static int digest_push(lua_State *L, const EVP_MD *md, bool hex)
{
	size_t len;
	const char *s = digest_bytes(L, 1, &len);
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (!EVP_Digest(s, len, out, &n, md, NULL))
		return luaL_error(L, "digest failed");
	if (!hex) {
		lua_pushlstring(L, (const char *)out, n);
		return 1;
	}
	static const char digits[] = "0123456789abcdef";
	char text[2 * EVP_MAX_MD_SIZE];
	for (unsigned i = 0; i < n; i++) {
		text[2 * i] = digits[out[i] >> 4];
		text[2 * i + 1] = digits[out[i] & 15];
	}
	lua_pushlstring(L, text, 2 * n);
	return 1;
}

static int digest_md5(lua_State *L)
{
	return digest_push(L, EVP_md5(), true);
}

static int digest_md5_bin(lua_State *L)
{
	return digest_push(L, EVP_md5(), false);
}

static int digest_sha1_bin(lua_State *L)
{
	return digest_push(L, EVP_sha1(), false);
}

/* hmac_sha1(key, s): the binary digest */
static int digest_hmac_sha1(lua_State *L)
{
	size_t klen, len;
	const char *key = luaL_checklstring(L, 1, &klen);
	const char *s = luaL_checklstring(L, 2, &len);
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (!HMAC(EVP_sha1(), key, (int)klen, (const unsigned char *)s, len, out, &n))
		return luaL_error(L, "hmac_sha1 failed");
	lua_pushlstring(L, (const char *)out, n);
	return 1;
}

static int digest_crc32(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	uLong crc = crc32(0L, Z_NULL, 0);
	/* zlib takes uInt lengths: feed a huge string in slices. */
	while (len > 0) {
		uInt part = len > 0x40000000u ? 0x40000000u : (uInt)len;
		crc = crc32(crc, (const Bytef *)s, part);
		s += part;
		len -= part;
	}
	lua_pushnumber(L, (lua_Number)crc);
	return 1;
}

/* encode_base64(s [, no_padding]) */
static int digest_encode_base64(lua_State *L)
{
	size_t len;
	const char *s = digest_bytes(L, 1, &len);
	bool pad = true;
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TBOOLEAN);
		pad = !lua_toboolean(L, 2);
	}
	size_t cap = 4 * ((len + 2) / 3) + 1;
	unsigned char *out = malloc(cap);
	if (!out)
		return luaL_error(L, "out of memory");
	size_t n = 0;
	/* EVP_EncodeBlock takes an int length: encode in whole groups. */
	for (size_t done = 0; done < len;) {
		size_t part = len - done > 3u * (1u << 28) ? 3u * (1u << 28) : len - done;
		n += (size_t)EVP_EncodeBlock(out + n, (const unsigned char *)s + done, (int)part);
		done += part;
	}
	while (!pad && n > 0 && out[n - 1] == '=')
		n--;
	lua_pushlstring(L, (const char *)out, n);
	free(out);
	return 1;
}

static const char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* decode_base64(s): nginx's ngx_decode_base64: the input ends at the first
 * '=' (padding optional, what follows ignored); any other byte outside the
 * alphabet, or a length leaving a lone sextet, gives nil. The checked
 * characters, padded again, go to OpenSSL's decoder. */
static int digest_decode_base64(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "string argument only");
	size_t len;
	const char *s = lua_tolstring(L, 1, &len);
	size_t n = 0;
	while (n < len && s[n] != '=') {
		if (!s[n] || !memchr(base64_alphabet, s[n], sizeof base64_alphabet - 1)) {
			lua_pushnil(L);
			return 1;
		}
		n++;
	}
	if (n % 4 == 1 || n > INT_MAX - 3) {
		lua_pushnil(L);
		return 1;
	}
	size_t pad = (4 - n % 4) % 4;
	char *in = malloc(n + pad + 1);
	unsigned char *out = malloc((n + pad) / 4 * 3 + 1);
	int got = -1;
	if (in && out) {
		memcpy(in, s, n);
		memset(in + n, '=', pad);
		got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)(n + pad));
	}
	free(in);
	if (got < 0) {
		free(out);
		return luaL_error(L, "out of memory");
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	lua_pushlstring(L, (const char *)out, (size_t)got - pad);
	free(out);
	return 1;
}

int luaopen_smtp_digest(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"md5", digest_md5},
		{"md5_bin", digest_md5_bin},
		{"sha1_bin", digest_sha1_bin},
		{"hmac_sha1", digest_hmac_sha1},
		{"crc32", digest_crc32},
		{"encode_base64", digest_encode_base64},
		{"decode_base64", digest_decode_base64},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
