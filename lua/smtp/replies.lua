-- Generated from core/proto/replies.c by core/tools/replies_lua.c
-- (make lua/smtp/replies.lua): edit the C table, not this file.
-- The reply catalogue outside the server; inside it, smtp.replies is
-- the C table itself (core/lua/api_replies.c), and
-- tests/e2e/test_docs.py checks that the two are the same.
return {
  -- RFC 3463 enhanced code for a reply code (smtp-server's table); a code
  -- not listed gets X.0.0 of its class.
  enhanced = {
    [211] = "2.0.0",
    [214] = "2.0.0",
    [220] = "2.0.0",
    [221] = "2.0.0",
    [235] = "2.7.0",
    [250] = "2.0.0",
    [251] = "2.1.5",
    [252] = "2.0.0",
    [421] = "4.4.2",
    [450] = "4.2.1",
    [451] = "4.3.0",
    [452] = "4.2.2",
    [454] = "4.7.0",
    [500] = "5.5.2",
    [501] = "5.5.4",
    [502] = "5.5.1",
    [503] = "5.5.1",
    [504] = "5.5.4",
    [521] = "5.3.2",
    [523] = "5.3.4",
    [530] = "5.7.0",
    [534] = "5.7.9",
    [535] = "5.7.8",
    [538] = "5.7.11",
    [550] = "5.1.1",
    [551] = "5.1.6",
    [552] = "5.2.2",
    [553] = "5.1.3",
    [554] = "5.6.0",
    [555] = "5.5.4",
  },
  -- The code of a hook's rejection that names none.
  rejectCode = {
    onConnect = 554,
    onSecure = 554,
    SNICallback = 554,
    onAuth = 535,
    onMailFrom = 550,
    onRcptTo = 550,
    onData = 450,
    onClose = 451,
    onError = 451,
  },
  -- The text of a rejection that gives none.
  rejected = "Error: rejected",
  -- {code, enhanced code, text}; texts are printable ASCII without quotes.
  internalError = { 451, "4.3.0", "Error: internal server error" },
  authAccepted = { 235, "2.7.0", "Authentication successful" },
  authNoUser = { 535, "5.7.8", "Error: Authentication credentials invalid" },
  mailAccepted = { 250, "2.1.0", "Accepted" },
  rcptAccepted = { 250, "2.1.5", "Accepted" },
  messageQueued = { 250, "2.6.0", "OK: message queued" },
  messageAccepted = { 250, "2.6.0", "OK: message accepted" },
  recipientNotAccepted = { 450, "4.2.1", "Error: message not accepted for this recipient" },
}
