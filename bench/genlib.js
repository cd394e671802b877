'use strict';
// What the load generators (loadgen.js, soakgen.js, conngen.js) share: HTTP/1.1 responses read
// off raw `net` sockets, masked client WebSocket frames, one read buffer for every socket, and
// the command loop on stdin and stdout. No dependencies.

const net = require('net');
const crypto = require('crypto');
const readline = require('readline');

function bump(map, key, by = 1) { map[key] = (map[key] || 0) + by; }
function reply(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

// Resolves true once pred() holds, false after timeoutMs; pred is asked every stepMs.
function waitFor(pred, timeoutMs, stepMs) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const tick = () => {
      if (pred()) resolve(true);
      else if (Date.now() - t0 >= timeoutMs) resolve(false);
      else setTimeout(tick, stepMs);
    };
    tick();
  });
}

// ---------------------------------------------------------------- HTTP
const CRLF2 = Buffer.from('\r\n\r\n');

// A response head, parsed lazily: only the headers asked for are looked up (this is on the
// long-poll hot path, one head per delivered message).
class Head {
  constructor(text) {
    this.text = text;
    this.lower = null;
    this.status = parseInt(text.slice(9, 12), 10);
  }
  get(name) { // name in lower case; '' when absent
    if (this.lower === null) this.lower = this.text.toLowerCase();
    const i = this.lower.indexOf(`\r\n${name}:`);
    if (i === -1) return '';
    const start = i + name.length + 3;
    let end = this.text.indexOf('\r\n', start);
    if (end === -1) end = this.text.length;
    return this.text.slice(start, end).trim();
  }
}

// Gather a response head over reads in owner.hbuf; once it is whole, set owner.head and return
// [buffer, index where the body starts in it], until then null.
function takeHead(owner, chunk) {
  let buf = chunk;
  if (owner.hbuf) { buf = Buffer.concat([owner.hbuf, chunk]); owner.hbuf = null; }
  const end = buf.indexOf(CRLF2);
  if (end === -1) {
    owner.hbuf = Buffer.from(buf);
    if (buf.length > 65536) throw new Error('response head too large');
    return null;
  }
  owner.head = new Head(buf.latin1Slice(0, end));
  return [buf, end + 4];
}

// Chunked transfer decoding; feed() returns the index after the final chunk, or -1 for "more".
class Chunked {
  constructor() { this.state = 0; this.remaining = 0; this.line = ''; }
  feed(buf, start, onPiece) {
    let i = start;
    const n = buf.length;
    while (i < n) {
      if (this.state === 0 || this.state === 3) {
        const nl = buf.indexOf(10, i);
        if (nl === -1) { this.line += buf.latin1Slice(i, n); return -1; }
        const line = this.line + buf.latin1Slice(i, nl);
        this.line = '';
        i = nl + 1;
        if (this.state === 3) { // trailers until an empty line
          if (line === '' || line === '\r') { this.state = 0; return i; }
          continue;
        }
        const size = parseInt(line, 16);
        if (Number.isNaN(size)) throw new Error('bad chunk size line ' + JSON.stringify(line));
        if (size === 0) { this.state = 3; continue; }
        this.remaining = size;
        this.state = 1;
      } else if (this.state === 1) {
        const take = Math.min(this.remaining, n - i);
        onPiece(buf, i, i + take);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 2;
      } else { // CRLF after chunk data
        const nl = buf.indexOf(10, i);
        if (nl === -1) return -1;
        i = nl + 1;
        this.state = 0;
      }
    }
    return -1;
  }
}

// Sequential HTTP/1.1 responses on one keep-alive connection: onResponse(status, head, body).
class HttpReader {
  constructor(onResponse) { this.onResponse = onResponse; this.reset(); }
  reset() { this.state = 0; this.head = null; this.parts = []; this.remaining = 0; this.chunked = null; this.hbuf = null; }
  feed(buf) {
    let i = 0;
    while (i < buf.length) {
      if (this.state === 0) {
        if (this.hbuf) { buf = Buffer.concat([this.hbuf, buf.subarray(i)]); i = 0; this.hbuf = null; }
        const end = buf.indexOf(CRLF2, i);
        if (end === -1) {
          this.hbuf = Buffer.from(buf.subarray(i));
          if (this.hbuf.length > 65536) throw new Error('response head too large');
          return;
        }
        this.head = new Head(buf.latin1Slice(i, end));
        i = end + 4;
        const st = this.head.status;
        const h = this.head;
        if (st === 204 || st === 304 || (st >= 100 && st < 200)) { this.complete(); continue; }
        const cl = h.get('content-length');
        if (cl !== '') {
          this.remaining = parseInt(cl, 10);
          this.state = 1;
          if (this.remaining === 0) this.complete();
        } else if (h.get('transfer-encoding').toLowerCase().includes('chunked')) {
          this.chunked = new Chunked();
          this.state = 2;
        } else {
          this.state = 3; // body until the connection closes
        }
      } else if (this.state === 1) {
        const take = Math.min(this.remaining, buf.length - i);
        this.parts.push(Buffer.from(buf.subarray(i, i + take)));
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.complete();
      } else if (this.state === 2) {
        const r = this.chunked.feed(buf, i, (b, s, e) => this.parts.push(Buffer.from(b.subarray(s, e))));
        if (r === -1) return;
        i = r;
        this.complete();
      } else {
        this.parts.push(Buffer.from(buf.subarray(i)));
        return;
      }
    }
  }
  eof() { if (this.state === 3) this.complete(); }
  complete() {
    const body = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts);
    const head = this.head;
    this.reset();
    this.onResponse(head.status, head, body);
  }
}

// Every socket reads into this one buffer (net's `onread` option): no allocation and no stream
// machinery per read. A handler may only look at the bytes during its call; whatever it keeps
// for later (a partial frame, a response head) it copies.
const READ_BUF = Buffer.allocUnsafe(256 * 1024);

// connectSocket(onBytes, port = defaultPort): a socket to host whose reads go to onBytes.
function connector(host, defaultPort) {
  return (onBytes, port = defaultPort) => {
    const s = net.connect({
      host,
      port,
      onread: { buffer: READ_BUF, callback: (nread, buf) => { onBytes(buf.subarray(0, nread)); } },
    });
    s.setNoDelay(true);
    return s;
  };
}

// ---------------------------------------------------------------- WebSocket
function maskedFrame(opcode, payload) {
  const len = payload.length;
  let hdr;
  if (len < 126) { hdr = Buffer.alloc(2); hdr[1] = 0x80 | len; }
  else if (len < 65536) { hdr = Buffer.alloc(4); hdr[1] = 0x80 | 126; hdr.writeUInt16BE(len, 2); }
  else { hdr = Buffer.alloc(10); hdr[1] = 0x80 | 127; hdr.writeUInt32BE(0, 2); hdr.writeUInt32BE(len, 6); }
  hdr[0] = 0x80 | opcode;
  const key = crypto.randomBytes(4);
  const body = Buffer.alloc(len);
  for (let k = 0; k < len; k++) body[k] = payload[k] ^ key[k & 3];
  return Buffer.concat([hdr, key, body]);
}

// Walk the whole frames a server sent in buf[s, e): onFrame(b0, ps, pe, masked) for each, its
// payload in buf[ps, pe) (masked: the mask bit was set, which a server must not do; the key is
// skipped). Returns where the first incomplete frame starts (e when none is), or -1 when
// onFrame returned true to stop the walk.
function eachFrame(buf, s, e, onFrame) {
  while (e - s >= 2) {
    const b0 = buf[s];
    const b1 = buf[s + 1];
    let plen = b1 & 0x7f;
    let hdr = 2;
    if (plen === 126) { if (e - s < 4) break; plen = buf.readUInt16BE(s + 2); hdr = 4; }
    else if (plen === 127) {
      if (e - s < 10) break;
      plen = buf.readUInt32BE(s + 2) * 4294967296 + buf.readUInt32BE(s + 6);
      hdr = 10;
    }
    if (b1 & 0x80) hdr += 4;
    if (e - s < hdr + plen) break;
    const ps = s + hdr;
    s = ps + plen;
    if (onFrame(b0, ps, s, (b1 & 0x80) !== 0)) return -1;
  }
  return s;
}

// ---------------------------------------------------------------- command loop
// Commands arrive on stdin, one JSON object a line, and each is answered with one JSON line on
// stdout: {cmd, ...what commands[cmd](msg) resolved to}, or {cmd, error}. They run one after
// the other, except those named in `immediate`, which answer at once, also while others run.
// end(code) is called with 0 when stdin closes and with 3 after maxLifetimeS.
function serveCommands(commands, { end, maxLifetimeS, log, immediate = new Set() }) {
  async function answer(msg) {
    if (msg === null) { reply({ error: 'bad json' }); return; }
    const fn = commands[msg.cmd];
    if (!fn) { reply({ cmd: msg.cmd, error: 'unknown command' }); return; }
    try {
      reply(Object.assign({ cmd: msg.cmd }, await fn(msg)));
    } catch (e) {
      reply({ cmd: msg.cmd, error: String(e && e.stack ? e.stack : e) });
    }
  }
  let chain = Promise.resolve();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    let msg = null;
    try { msg = JSON.parse(line); } catch (e) { /* answered in turn */ }
    if (msg !== null && immediate.has(msg.cmd)) answer(msg);
    else chain = chain.then(() => answer(msg));
  });
  rl.on('close', () => end(0));
  setTimeout(() => { log('max lifetime reached, exiting'); end(3); }, maxLifetimeS * 1000).unref();
}

module.exports = {
  bump, reply, waitFor, CRLF2, Head, takeHead, Chunked, HttpReader, READ_BUF, connector, maskedFrame, eachFrame,
  serveCommands,
};
