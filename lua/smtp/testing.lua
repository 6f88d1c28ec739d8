-- smtp.testing: the policy author's testing kit, for plain `busted`.
--
-- Unit level (no server):
--   local options, hooks, fake = testing.load("my-policy.lua", {env = {...}})
--   hooks.onRcptTo(testing.address("x@example.org"), testing.session{user = "bob"})
--   testing.call(hooks, "onRcptTo", address, session)  --> 550, "5.1.1 ..."
--   testing.stream("body"), testing.conn{certificate = {...}}
-- Conversation level (the real C core, a free loopback port, no root):
--   local server = assert(testing.server("my-policy.lua", {env = {...}}))
--   local c = assert(server:client())
--   c:ehlo("me.example"); c:mail("a@b"); testing.assert_reply(c, 250, "2.1.0")
--   server:messages()[1].body; server:stop()
-- See docs/guide.md. This module only gathers the kit's parts, one job
-- each, from lua/smtp/testing/:
--   fakes       sessions, addresses, streams and conns as the core makes them
--   load        a policy script run outside the server, on a fake smtp module
--   reply       the reply the core gives for a hook's verdict (testing.call)
--   server      the real core on free ports, testing.check
--   recorder    inside the server: records what onData received
--   client      the SMTP client specs drive, with STARTTLS/SNI and transcripts
--   assertions  assert.reply and friends, failing with the transcript
--   ngx         require "smtp.ngx" under testing.load
--   service     real peers for the policy: redis-server, a spec's program
--   pki         a throw-away certificate authority
--   users       a users file of crypt(3) hashes, as auth-file.lua reads
--   nexthop     a real next hop (aiosmtpd) for policies that relay
--   serialize   values as Lua source (options to the server, records back)
--   system      paths, scratch directories, processes (FFI), clean-up at exit
--   files       whole files in and out
local assertions = require "smtp.testing.assertions"
local fakes = require "smtp.testing.fakes"
local files = require "smtp.testing.files"
local load = require "smtp.testing.load"
local nexthop = require "smtp.testing.nexthop"
local pki = require "smtp.testing.pki"
local recorder = require "smtp.testing.recorder"
local reply = require "smtp.testing.reply"
local serialize = require "smtp.testing.serialize"
local server = require "smtp.testing.server"
local service = require "smtp.testing.service"
local system = require "smtp.testing.system"
local users = require "smtp.testing.users"

return {
  address = fakes.address,
  session = fakes.session,
  stream = fakes.stream,
  conn = fakes.conn,
  load = load.load,
  call = reply.call,
  server = server.server,
  binary = server.binary,
  check = server.check,
  check_reply = assertions.check_reply,
  assert_reply = assertions.assert_reply,
  redis = service.redis,
  service = service.service,
  free_port = service.free_port,
  pki = pki.pki,
  users_file = users.users_file,
  nexthop = nexthop.nexthop,
  tmpdir = system.tmpdir,
  home = system.home,
  read_file = files.read_file,
  write_file = files.write_file,
  -- The kit's own plumbing, kept reachable as before the split.
  _serialize = serialize.serialize,
  _deserialize = serialize.deserialize,
  _instrument = recorder.instrument,
  -- Lives as long as this table: stops leftover servers, removes scratch
  -- directories.
  _sentinel = system._sentinel,
}
