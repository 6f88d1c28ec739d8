-- The policy luasmtpd runs in the performance benchmark
-- (tests/bench/compare.py): every hook the figures must hold with is
-- there and does a little work, nothing else.
--   onConnect, onMailFrom, onRcptTo: bump a counter on the session;
--   onData: reads every chunk of the stream and discards it.
-- STARTTLS uses $LUASMTPD_BENCH_KEY / $LUASMTPD_BENCH_CERT (compare.py
-- makes an ECDSA P-256 pair) or the development certificate.
-- Run: build/luasmtpd --listen 127.0.0.1:PORT --log-level warn scripts/bench.lua
local key = os.getenv("LUASMTPD_BENCH_KEY")
local cert = os.getenv("LUASMTPD_BENCH_CERT")

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = "bench.test",
  authOptional = true,
  socketTimeout = 3600,
  key = key, -- nil: the development key and certificate
  cert = cert,

  onConnect = function(session)
    session.benchCount = 1
  end,

  onMailFrom = function(address, session)
    session.benchCount = (session.benchCount or 0) + 1
  end,

  onRcptTo = function(address, session)
    session.benchCount = (session.benchCount or 0) + 1
  end,

  onData = function(stream, session)
    for _ in stream:chunks() do end
  end,
}
