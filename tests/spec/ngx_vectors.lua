-- Known vectors for ngx.* run inside the real server (ngx_spec.lua runs
-- this script with `luasmtpd -t`: the C modules exist only there). Every
-- failing check is listed; any failure makes loading the script fail.
require "smtp.ngx"

local failed = {}
local function eq(got, want, what)
  if got ~= want then
    failed[#failed + 1] = ("%s: got %q, want %q"):format(what, tostring(got), tostring(want))
  end
end
local function hex(s) return require("resty.string").to_hex(s) end

-- RFC 1321 appendix A.5; FIPS 180 "abc"
for input, want in pairs {
  [""] = "d41d8cd98f00b204e9800998ecf8427e", a = "0cc175b9c0f1b6a831c399e269772661",
  abc = "900150983cd24fb0d6963f7d28e17f72", ["message digest"] = "f96b697d7cb7938d525a2f31aaf161d0",
  abcdefghijklmnopqrstuvwxyz = "c3fcd3d76192e4007dfb496cca67e13b",
} do
  eq(ngx.md5(input), want, "md5 " .. input)
  eq(hex(ngx.md5_bin(input)), want, "md5_bin " .. input)
end
eq(ngx.md5(nil), "d41d8cd98f00b204e9800998ecf8427e", "md5(nil) is md5 of the empty string")
eq(hex(ngx.sha1_bin("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d", "sha1_bin abc")

-- RFC 2202 section 3, test cases 1, 2, 3, 6
eq(hex(ngx.hmac_sha1(("\11"):rep(20), "Hi There")), "b617318655057264e28bc0b6fb378c8ef146be00", "hmac 1")
eq(hex(ngx.hmac_sha1("Jefe", "what do ya want for nothing?")), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79", "hmac 2")
eq(hex(ngx.hmac_sha1(("\170"):rep(20), ("\221"):rep(50))), "125d7342b9ac11cd91a39af48aa17b4f63f175d3", "hmac 3")
eq(hex(ngx.hmac_sha1(("\170"):rep(80), "Test Using Larger Than Block-Size Key - Hash Key First")),
   "aa4ae5e15272d00e95705637ce8a3b55ed402112", "hmac 6")

-- RFC 4648 section 10
for input, want in pairs { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                           fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" } do
  eq(ngx.encode_base64(input), want, "encode_base64 " .. input)
  eq(ngx.decode_base64(want), input, "decode_base64 " .. want)
  eq(ngx.encode_base64(input, true), (want:gsub("=", "")), "encode_base64 no padding " .. input)
  eq(ngx.decode_base64((want:gsub("=", ""))), input, "decode_base64 unpadded " .. want)
end
eq(ngx.encode_base64(nil), "", "encode_base64(nil)")
eq(ngx.decode_base64("Zm9v!"), nil, "decode_base64: a byte outside the alphabet")
eq(ngx.decode_base64("Zm9vY"), nil, "decode_base64: a lone sextet")
eq(ngx.decode_base64("Zg==junk"), "f", "decode_base64 stops at '='")
eq(ngx.crc32_short("The quick brown fox jumps over the lazy dog"), 1095738169, "crc32_short")
eq(ngx.crc32_long("hello"), 907060870, "crc32_long")

-- lua-nginx-module t/034-match.t, 035-gmatch.t, 036-sub.t, 037-gsub.t, 038-match-o.t
local m = ngx.re.match("hello, 1234", "([0-9]+)")
eq(m[0], "1234", "match [0]"); eq(m[1], "1234", "match [1]")
m = ngx.re.match("hello, 1234", "([a-z]+), [0-9]+")
eq(m[0], "hello, 1234", "match whole"); eq(m[1], "hello", "match group")
m = ngx.re.match("hello, 1234", "(?<first>[a-z]+), [0-9]+", "jo")
eq(m.first, "hello", "named capture"); eq(m[1], "hello", "named capture by number")
eq(ngx.re.match("HELLO", "hello", "i")[0], "HELLO", "i")
eq(ngx.re.match("hello\nworld", "^world", "m")[0], "world", "m")
eq(ngx.re.match("hello\nworld", "^world"), nil, "no m")
eq(ngx.re.match("hello\nworld", ".+", "s")[0], "hello\nworld", "s")
eq(ngx.re.match("hello, 1234", "[0-9]+", "a"), nil, "a")
eq(ngx.re.match("hello", "h e l", "x")[0], "hel", "x")
eq(ngx.re.match("你好", ".", "u")[0], "你", "u")
eq(ngx.re.match("hello", "he|hel", "d")[0], "hel", "d: the longest match")
m = ngx.re.match("hello", "(h)(x)?")
eq(m[2], false, "an unmatched group is false")
m = ngx.re.match("hello, world", "(?<named>\\w+), (?<named>\\w+)", "D")
eq(type(m.named) == "table" and table.concat(m.named, "|"), "hello|world", "D")
local ctx = { pos = 2 }
eq(ngx.re.match("1234, hello", "[0-9]+", "", ctx)[0], "234", "ctx.pos start")
eq(ctx.pos, 5, "ctx.pos after")
local none, err = ngx.re.match("hello", "(")
eq(none, nil, "bad regex")
eq(err, "pcre2_compile() failed: missing closing parenthesis in \"(\"", "bad regex error")
local ok, msg = pcall(ngx.re.match, "a", "a", "H")
eq(not ok and msg:match('unknown flag "H"') ~= nil, true, "unknown flag raises")

local from, to = ngx.re.find("hello, 1234", "([0-9]+)")
eq(from, 8, "find from"); eq(to, 11, "find to")
from, to = ngx.re.find("hello, 1234", "([a-z]+), ([0-9]+)", "jo", nil, 2)
eq(from, 8, "find nth from"); eq(to, 11, "find nth to")
local _, _, nth_err = ngx.re.find("hello", "(h)", "", nil, 2)
eq(nth_err, "nth out of bound", "find nth out of bound")

local words = {}
for w in ngx.re.gmatch("hello, world", "([a-z]+)", "j") do words[#words + 1] = w[1] end
eq(table.concat(words, "|"), "hello|world", "gmatch")
local empties = 0
for _ in ngx.re.gmatch("abc", "") do empties = empties + 1 end
eq(empties, 4, "gmatch: empty matches step one character")

local s, n = ngx.re.sub("hello, world", "([a-z])[a-z]+", "[$0][$1]")
eq(s, "[hello][h], world", "sub"); eq(n, 1, "sub count")
s, n = ngx.re.gsub("hello, world", "([a-z])[a-z]+", "[$0][$1]")
eq(s, "[hello][h], [world][w]", "gsub"); eq(n, 2, "gsub count")
eq(ngx.re.sub("a b", "(a)", "${1}s$$"), "as$ b", "${1} and $$")
eq(ngx.re.sub("abc", "b", "[$9]"), "a[]c", "a group the pattern lacks is empty")
local _, _, tmpl_err = ngx.re.sub("abc", "b", "$a")
eq(tmpl_err, "failed to compile the replacement template", "bad template")
s, n = ngx.re.gsub("hello, world", "", "-")
eq(s, "-h-e-l-l-o-,- -w-o-r-l-d-", "gsub empty pattern"); eq(n, 13, "gsub empty pattern count")
eq(ngx.re.gsub("baaac", "a*", "-"), "-b--c-", "gsub a*")
eq(ngx.re.gsub("hello, world", "[a-z]+", function(c) return c[0]:upper() end), "HELLO, WORLD", "gsub function")
eq(ngx.re.gsub("abc", "x", "y"), "abc", "gsub without a match")

-- t/006-escape.t, t/030-uri-args.t
eq(ngx.escape_uri("a 你"), "a%20%E4%BD%A0", "escape_uri")
eq(ngx.escape_uri("a+b"), "a%2Bb", "escape_uri +")
eq(ngx.escape_uri("\"a/b={}:<>;&[]\\^"), "%22a%2Fb%3D%7B%7D%3A%3C%3E%3B%26%5B%5D%5C%5E", "escape_uri specials")
eq(ngx.escape_uri(nil), "", "escape_uri(nil)"); eq(ngx.escape_uri(32), "32", "escape_uri(32)")
eq(ngx.unescape_uri("a%20%e4%bd%a0"), "a 你", "unescape_uri")

eq(ngx.null, require("cjson").null, "ngx.null is cjson.null")
eq(ngx.get_phase(), "init", "phase while loading")
eq(ngx.config.subsystem, "stream", "subsystem")
eq(ngx.worker.pid(), require("smtp").pid(), "worker.pid")

if #failed > 0 then error(#failed .. " ngx vector(s) failed:\n" .. table.concat(failed, "\n"), 0) end
return { name = "mx.test" }
