// smtp-server anchor for compare.py: accept everything, drain the body, STARTTLS.
// usage: NODE_PATH=build/anchors/node_modules node node_sink.js PORT CERT KEY
const fs = require('fs');
const { SMTPServer } = require('smtp-server');
const [port, cert, key] = process.argv.slice(2);
const server = new SMTPServer({
  authOptional: true, disableReverseLookup: true, logger: false, size: 64 * 1024 * 1024,
  key: fs.readFileSync(key), cert: fs.readFileSync(cert),
  onData(stream, session, cb) { stream.on('data', () => {}); stream.on('end', () => cb()); },
});
server.on('error', (e) => console.error(e));
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
