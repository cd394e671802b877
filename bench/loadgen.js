'use strict';
// Load generator for bench/fanout.py: N subscribers of one transport plus the publisher, in one
// Node.js process (so the publish time embedded in each payload and the receive time come from
// the same clock). No dependencies: WebSocket, SSE and long poll are spoken over raw `net`
// sockets with minimal, allocation-light parsers, so the generator stays far below the server's
// cost per message.
//
// Usage: node loadgen.js '<json config>'   (normally started by fanout.py, pinned to a core)
// Commands arrive on stdin, one JSON object a line; every answer is one JSON line on stdout.
// Diagnostics go to stderr. The process exits when stdin closes or after cfg.maxLifetimeS.

const crypto = require('crypto');
const zlib = require('zlib');
const { performance } = require('perf_hooks');
const {
  bump, reply, waitFor, takeHead, Chunked, HttpReader, connector, maskedFrame, eachFrame, serveCommands,
} = require('./genlib');

const cfg = JSON.parse(process.argv[2] || '{}');
const HOST = cfg.host || '127.0.0.1';
const PORT = cfg.port; // the publisher's port (and the subscribers' unless cfg.ports is given)
// Subscriber ports: subscriber i connects to PORTS[i % PORTS.length] (several server nodes
// sharing one channel through a broker). Defaults to the one port.
const PORTS = Array.isArray(cfg.ports) && cfg.ports.length ? cfg.ports : [PORT];
const TARGET = cfg.target; // 'tidings' | 'nchan'
const TRANSPORT = cfg.transport; // 'ws' | 'sse' | 'long_poll'
const CHANNEL = cfg.channel || 'bench';
const SAMPLE_EVERY = Math.max(1, cfg.sampleEvery || 10);
const PUB_CONNS = Math.max(1, cfg.pubConns || 16);
const PAYLOAD_BYTES = cfg.payloadBytes || 100;
const POLL_TIMEOUT = cfg.pollTimeout || 30;
const MAX_LIFETIME_S = cfg.maxLifetimeS || 3600;
// WebSocket subscribers offer permessage-deflate (RFC 7692) and inflate compressed frames.
const DEFLATE = Boolean(cfg.deflate);
// 'pad': {"bench_t","seq","pad":"xxx..."} (compresses to nearly nothing); 'json': a realistic
// order document of about PAYLOAD_BYTES with ids, prices and text that vary per publish.
const PAYLOAD_KIND = cfg.payloadKind || 'pad';
// How a WebSocket subscriber subscribes, for servers that take the Tidings publish body
// (target 'tidings'): 'tidings' sends {"op":"subscribe"} and waits for "subscribed"; 'plain' is
// subscribed once the handshake is answered (the channel is in the path, cfg.wsPath: Django
// Channels); 'socketio' speaks Engine.IO v4 / Socket.IO v5 over the WebSocket (python-socketio):
// waits for the open packet `0{...}`, connects with `40{"channel":...}`, is subscribed on `40`,
// answers every ping `2` with a pong `3`, and counts events `42["message",{...}]`. Nchan's
// WebSocket subscribers are always 'plain'.
const WS_FLAVOUR = TARGET === 'nchan' ? 'plain' : (cfg.wsFlavour || 'tidings');

if (!PORT || !['tidings', 'nchan'].includes(TARGET) || !['ws', 'sse', 'long_poll'].includes(TRANSPORT)
  || !['tidings', 'plain', 'socketio'].includes(WS_FLAVOUR)) {
  process.stderr.write('loadgen: bad config ' + JSON.stringify(cfg) + '\n');
  process.exit(2);
}

const HOSTHDR = `${HOST}:${PORT}`;
const hostHdr = (port) => `${HOST}:${port}`;
const CH = encodeURIComponent(CHANNEL);
// Where a Tidings-speaking server has its endpoints: '' for `tidings serve`, the mount's prefix
// ('/rt') for Tidings inside an application.
const PREFIX = cfg.prefix || '';
const PATHS = TARGET === 'tidings'
  ? {
    ws: cfg.wsPath || (WS_FLAVOUR === 'socketio' ? '/socket.io/?EIO=4&transport=websocket' : `${PREFIX}/ws`),
    sse: `${PREFIX}/sse?channel=${CH}`,
    long_poll: `${PREFIX}/poll?channel=${CH}&timeout=${POLL_TIMEOUT}`,
    pub: `${PREFIX}/api/publish`,
  }
  : { ws: `/sub?channel=${CH}`, sse: `/sub?channel=${CH}`, long_poll: `/sub?channel=${CH}`, pub: `/pub?channel=${CH}` };

// Every published payload carries this key once; counting it counts delivered messages in any
// framing (a WebSocket frame, an SSE event, a long-poll answer holding several events).
const MARK = Buffer.from('bench_t"');
const MARK_LEN = MARK.length;

const nowUs = () => performance.now() * 1000;

function log(msg) { process.stderr.write(`loadgen[${TARGET}/${TRANSPORT}]: ${msg}\n`); }

// ---------------------------------------------------------------- counters and latency
let received = 0; // marks seen on all subscriber connections, since start
let subBytes = 0; // bytes read on all subscriber connections (WebSocket frames, HTTP), since start
let alive = 0; // subscribers ready and not closed
const HIST_BIN_US = 10;
const HIST_BINS = 1000000; // 10 us bins up to 10 s, plus one overflow bin
const hist = new Uint32Array(HIST_BINS + 1);
let histCount = 0;
let latMaxUs = 0;
const stats = {
  closes: {}, // close reason -> count (after a subscriber was ready)
  errors: {}, // error text -> count
  reconnects: 0, // long-poll keep-alive connections re-opened
  pollStatus: {}, // long-poll answer status -> count
  pubStatus: {}, // publish answer status -> count
  protoErrors: [], // first few unexpected things a server said
};
function protoError(msg) {
  bump(stats.errors, 'protocol');
  if (stats.protoErrors.length < 10) { stats.protoErrors.push(msg); log(msg); }
}

function recordLatency(buf, p, end) {
  let j = p;
  while (j < end && (buf[j] === 58 || buf[j] === 32)) j++; // ':' and ' '
  let v = 0;
  let digits = 0;
  while (j < end) {
    const c = buf[j];
    if (c < 48 || c > 57) break;
    v = v * 10 + (c - 48);
    j++;
    digits++;
  }
  if (digits === 0) return;
  let lat = nowUs() - v;
  if (lat < 0) lat = 0;
  if (lat > latMaxUs) latMaxUs = lat;
  let bin = Math.floor(lat / HIST_BIN_US);
  if (bin > HIST_BINS) bin = HIST_BINS;
  hist[bin]++;
  histCount++;
}

// Count marks in buf[start, end); record latency of each when the subscriber is sampled.
function countMarks(buf, start, end, sampled) {
  let n = 0;
  let i = buf.indexOf(MARK, start);
  while (i !== -1 && i + MARK_LEN <= end) {
    n++;
    if (sampled) recordLatency(buf, i + MARK_LEN, end);
    i = buf.indexOf(MARK, i + MARK_LEN);
  }
  return n;
}

function percentileMs(q) {
  if (histCount === 0) return null;
  const want = Math.max(1, Math.ceil(histCount * q));
  let acc = 0;
  for (let b = 0; b <= HIST_BINS; b++) {
    acc += hist[b];
    if (acc >= want) return b === HIST_BINS ? latMaxUs / 1000 : ((b + 0.5) * HIST_BIN_US) / 1000;
  }
  return latMaxUs / 1000;
}
function resetLatency() { hist.fill(0); histCount = 0; latMaxUs = 0; }

let onDelivery = null; // hook for the saturation pump, called after each chunk that had marks

// Sockets to the server, reading into the one buffer genlib.js shares.
const connectSocket = connector(HOST, PORT);

// ---------------------------------------------------------------- WebSocket
const SUBSCRIBE_FRAME = WS_FLAVOUR === 'tidings'
  ? maskedFrame(1, Buffer.from(JSON.stringify({ op: 'subscribe', channel: CHANNEL, ref: 1 }))) : null;
const SUBSCRIBED = Buffer.from('"subscribed"');
// Socket.IO: the CONNECT packet with the channel as auth data, and the Engine.IO pong.
const SIO_CONNECT = WS_FLAVOUR === 'socketio' ? maskedFrame(1, Buffer.from(`40${JSON.stringify({ channel: CHANNEL })}`)) : null;
const EIO_PONG = WS_FLAVOUR === 'socketio' ? maskedFrame(1, Buffer.from('3')) : null;
const DEFLATE_OFFER = DEFLATE ? 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n' : '';
const EMPTY_BLOCK = Buffer.from([0x00, 0x00, 0xff, 0xff]);
// the message ends in a sync flush, not a final block: inflate up to it, do not expect an end
const SYNC = { finishFlush: zlib.constants.Z_SYNC_FLUSH };

class Sub {
  constructor(idx, done) {
    this.idx = idx;
    this.port = PORTS[idx % PORTS.length];
    this.sampled = idx % SAMPLE_EVERY === 0;
    this.done = done; // called once: done(null) when ready, done(err) when the attempt failed
    this.ready = false;
    this.closed = false;
    this.sock = null;
    this.hbuf = null;
    this.head = null;
  }
  finishConnect(err) {
    if (!this.done) return;
    const d = this.done;
    this.done = null;
    if (!err) { this.ready = true; alive++; }
    d(err);
  }
  openSocket() {
    const s = connectSocket((c) => {
      subBytes += c.length;
      try { this.onData(c); } catch (e) { protoError(`sub ${this.idx}: ${e.message}`); s.destroy(); }
    }, this.port);
    this.sock = s;
    s.on('error', (e) => { this.lastError = e.code || e.message; });
    s.on('close', () => this.onClose());
    return s;
  }
  onClose(reason) {
    if (this.closed) return;
    this.closed = true;
    const why = reason || this.closeReason || this.lastError || 'eof';
    if (this.done) { this.finishConnect(new Error(why)); return; }
    if (this.ready) { alive--; bump(stats.closes, why); }
  }
}

class WsSub extends Sub {
  start() {
    this.wbuf = null;
    const s = this.openSocket();
    s.on('connect', () => {
      const key = crypto.randomBytes(16).toString('base64');
      s.write(`GET ${PATHS.ws} HTTP/1.1\r\nHost: ${hostHdr(this.port)}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${DEFLATE_OFFER}\r\n`);
    });
  }
  onData(chunk) {
    if (this.head === null) {
      const r = takeHead(this, chunk);
      if (r === null) return;
      if (this.head.status !== 101) {
        protoError(`websocket handshake answered ${this.head.status}`);
        this.closeReason = `http ${this.head.status}`;
        this.sock.destroy();
        return;
      }
      const ext = this.head.get('sec-websocket-extensions');
      if (DEFLATE && !ext.startsWith('permessage-deflate')) {
        protoError(`permessage-deflate offered, not negotiated: '${ext}'`);
      }
      if (SUBSCRIBE_FRAME) this.sock.write(SUBSCRIBE_FRAME);
      else if (WS_FLAVOUR === 'plain') this.finishConnect(null);
      // socketio: the server speaks first (the Engine.IO open packet)
      if (r[1] < r[0].length) this.frames(r[0].subarray(r[1]));
      return;
    }
    this.frames(chunk);
  }
  frames(buf) {
    if (this.wbuf) { buf = Buffer.concat([this.wbuf, buf]); this.wbuf = null; }
    let got = 0;
    const off = eachFrame(buf, 0, buf.length, (b0, ps, pe, masked) => {
      if (masked) protoError('server sent a masked frame');
      const op = b0 & 0x0f;
      if ((op === 1 || op === 2) && (b0 & 0x40)) {
        // A compressed message (RFC 7692 7.2.2). Tidings sends each event as one message, so
        // a subscriber counts compressed messages; the sampled ones inflate every message and
        // count its marks (and latency) as usual, which also checks what the others count.
        // Inflating on every subscriber would make this process the bottleneck.
        if (this.sampled) {
          const text = zlib.inflateRawSync(Buffer.concat([buf.subarray(ps, pe), EMPTY_BLOCK]), SYNC);
          const n = countMarks(text, 0, text.length, true);
          if (n !== 1) protoError(`a compressed message held ${n} events`);
          got += n;
        } else got += 1;
      } else if (op === 1 || op === 0 || op === 2) {
        const n = countMarks(buf, ps, pe, this.sampled);
        if (n > 0) got += n;
        else if (WS_FLAVOUR === 'socketio') this.engineIo(buf, ps, pe);
        else if (!this.ready && this.done) {
          if (buf.indexOf(SUBSCRIBED, ps) !== -1 && buf.indexOf(SUBSCRIBED, ps) < pe) this.finishConnect(null);
          else protoError(`unexpected frame before subscribed: ${buf.toString('utf8', ps, Math.min(pe, ps + 200))}`);
        } else {
          const text = buf.toString('utf8', ps, Math.min(pe, ps + 300));
          if (text.includes('"error"')) protoError(`error frame: ${text}`);
        }
      } else if (op === 9) {
        this.sock.write(maskedFrame(10, buf.subarray(ps, pe)));
      } else if (op === 8) {
        const code = pe - ps >= 2 ? buf.readUInt16BE(ps) : 1005;
        this.closeReason = `ws close ${code}`;
        this.sock.end(maskedFrame(8, buf.subarray(ps, Math.min(pe, ps + 2))));
      }
    });
    if (off < buf.length) this.wbuf = Buffer.from(buf.subarray(off));
    if (got) { received += got; if (onDelivery) onDelivery(); }
  }
}

// Engine.IO / Socket.IO packets that are not events: the open packet, the connect answer, pings.
WsSub.prototype.engineIo = function engineIo(buf, ps, pe) {
  const c0 = buf[ps];
  const c1 = pe - ps > 1 ? buf[ps + 1] : -1;
  if (c0 === 50 && pe - ps === 1) { this.sock.write(EIO_PONG); return; } // '2': ping
  if (c0 === 48 && this.done) { this.sock.write(SIO_CONNECT); return; } // '0{...}': open
  if (c0 === 52 && c1 === 48 && this.done) { this.finishConnect(null); return; } // '40{"sid"}'
  const text = buf.toString('utf8', ps, Math.min(pe, ps + 300));
  if (c0 === 52 && c1 === 52) { this.closeReason = 'socket.io connect error'; protoError(`socket.io: ${text}`); return; }
  if (c0 === 49) { this.closeReason = 'engine.io close'; return; } // '1': close
  if (!(c0 === 52 && c1 === 50)) protoError(`socket.io: unexpected packet ${text}`);
};

class SseSub extends Sub {
  start() {
    this.carry = null;
    this.chunked = null;
    const s = this.openSocket();
    s.on('connect', () => {
      s.write(`GET ${PATHS.sse} HTTP/1.1\r\nHost: ${hostHdr(this.port)}\r\nAccept: text/event-stream\r\n\r\n`);
    });
    this.piece = (b, s0, e0) => this.ssePiece(b, s0, e0);
  }
  onData(chunk) {
    let buf = chunk;
    let start = 0;
    if (this.head === null) {
      const r = takeHead(this, chunk);
      if (r === null) return;
      const h = this.head;
      if (h.status !== 200 || !h.get('content-type').startsWith('text/event-stream')) {
        protoError(`SSE answered ${h.status} ${h.get('content-type')}`);
        this.closeReason = `http ${h.status}`;
        this.sock.destroy();
        return;
      }
      if (h.get('transfer-encoding').toLowerCase().includes('chunked')) this.chunked = new Chunked();
      this.finishConnect(null);
      buf = r[0];
      start = r[1];
      if (start >= buf.length) return;
    }
    if (this.chunked) {
      if (this.chunked.feed(buf, start, this.piece) !== -1) { this.closeReason = 'stream ended'; this.sock.destroy(); }
    } else {
      this.ssePiece(buf, start, buf.length);
    }
  }
  // Count marks only in complete events (up to the last blank line), so that a mark split
  // across two reads is never missed nor counted twice. Lines end in LF (Tidings) or CRLF
  // (sse-starlette), so a blank line is LF LF or LF CR LF.
  ssePiece(buf, s, e) {
    if (this.carry) {
      buf = Buffer.concat([this.carry, buf.subarray(s, e)]);
      s = 0;
      e = buf.length;
      this.carry = null;
    }
    let upto;
    if (e - s >= 2 && buf[e - 1] === 10 && (buf[e - 2] === 10 || (e - s >= 3 && buf[e - 2] === 13 && buf[e - 3] === 10))) upto = e;
    else {
      const lf = e - s >= 2 ? buf.lastIndexOf('\n\n', e - 2) : -1;
      const crlf = e - s >= 3 ? buf.lastIndexOf('\n\r\n', e - 3) : -1;
      const end = Math.max(lf >= s ? lf + 2 : -1, crlf >= s ? crlf + 3 : -1);
      if (end === -1) {
        this.carry = Buffer.from(buf.subarray(s, e));
        if (this.carry.length > 1 << 20) throw new Error('SSE event larger than 1 MB');
        return;
      }
      upto = end;
      this.carry = Buffer.from(buf.subarray(upto, e));
    }
    const n = countMarks(buf, s, upto, this.sampled);
    if (n) { received += n; if (onDelivery) onDelivery(); }
  }
}

class PollSub extends Sub {
  start() {
    this.cursor = null; // tidings
    this.lastModified = null; // nchan
    this.etag = null;
    this.failures = 0;
    this.reader = new HttpReader((st, h, body) => this.onResponse(st, h, body));
    this.open();
  }
  open() {
    const s = connectSocket((c) => {
      if (s !== this.sock) return;
      try { this.reader.feed(c); } catch (e) { protoError(`poll ${this.idx}: ${e.message}`); s.destroy(); }
    }, this.port);
    this.sock = s;
    this.reader.reset();
    this.connClose = false;
    s.on('error', (e) => { this.lastError = e.code || e.message; });
    s.on('close', () => { if (s === this.sock) this.onSockClose(); });
    s.on('connect', () => {
      this.failures = 0;
      this.request();
      if (this.done) this.finishConnect(null);
    });
  }
  request() {
    let req;
    if (TARGET === 'tidings') {
      const since = this.cursor ? `&since=${encodeURIComponent(this.cursor)}` : '';
      req = `GET ${PATHS.long_poll}${since} HTTP/1.1\r\nHost: ${hostHdr(this.port)}\r\n\r\n`;
    } else {
      let cond = '';
      if (this.lastModified) cond += `If-Modified-Since: ${this.lastModified}\r\n`;
      if (this.etag) cond += `If-None-Match: ${this.etag}\r\n`;
      req = `GET ${PATHS.long_poll} HTTP/1.1\r\nHost: ${hostHdr(this.port)}\r\n${cond}\r\n`;
    }
    this.sock.write(req);
  }
  onResponse(st, h, body) {
    bump(stats.pollStatus, st);
    if (st === 200) {
      const n = countMarks(body, 0, body.length, this.sampled);
      if (n) { received += n; if (onDelivery) onDelivery(); }
    } else if (st !== 204 && st !== 304 && st !== 408) {
      protoError(`long poll answered ${st}: ${body.toString('utf8', 0, Math.min(body.length, 200))}`);
    }
    if (TARGET === 'tidings') {
      let cur = h.get('tidings-cursor');
      if (!cur && st === 200) {
        try { cur = JSON.parse(body.toString('utf8')).cursor; } catch (e) { /* reported below */ }
      }
      if (cur) this.cursor = cur;
      else if (st === 200 || st === 204) protoError(`long poll ${st} without a cursor`);
    } else {
      const lm = h.get('last-modified');
      const etag = h.get('etag');
      if (lm) this.lastModified = lm;
      if (etag) this.etag = etag;
    }
    if (h.get('connection').toLowerCase() === 'close') { this.connClose = true; return; } // re-poll on close
    if (st >= 400 && st !== 408) {
      this.failures++;
      if (this.failures > 20) { this.sock.destroy(); return; }
      setTimeout(() => { if (!this.closed) this.request(); }, 200);
      return;
    }
    this.request();
  }
  onSockClose() {
    this.reader.eof();
    if (this.done) { this.closed = true; this.finishConnect(new Error(this.lastError || 'closed while connecting')); return; }
    if (this.stopping || this.closed) return;
    // The server ended a keep-alive connection: open a new one and poll on from the cursor.
    this.failures++;
    if (this.failures > 5) { this.onClose(this.lastError || 'eof'); return; }
    stats.reconnects++;
    setTimeout(() => { if (!this.stopping) this.open(); }, this.failures > 1 ? 100 : 0);
  }
}

const SubClass = { ws: WsSub, sse: SseSub, long_poll: PollSub }[TRANSPORT];
const subs = [];

// Open n subscribers with at most `window` handshakes in progress; retry a failed attempt.
function connectMany(n, windowSize, timeoutMs, retries) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const base = subs.length;
    let next = 0;
    let pending = 0;
    let ok = 0;
    let failed = 0;
    const failReasons = {};
    let finished = false;
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    function finish(why) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ requested: n, connected: ok, failed, pendingAtEnd: pending, failReasons, ms: Date.now() - t0, end: why, alive });
    }
    function attempt(idx, left) {
      pending++;
      const sub = new SubClass(idx, (err) => {
        pending--;
        if (!err) { ok++; subs.push(sub); }
        else if (left > 0 && !finished) { setTimeout(() => attempt(idx, left - 1), 50); return; }
        else { failed++; bump(failReasons, err.message); }
        pump();
      });
      sub.start();
    }
    function pump() {
      if (finished) return;
      while (pending < windowSize && next < n) attempt(base + next++, retries);
      if (next >= n && pending === 0) finish('done');
    }
    pump();
  });
}

// ---------------------------------------------------------------- publisher
let pubSeq = 0;
let pubOutstanding = 0;
let pubErrors = 0;
let pubQueue = 0; // publishes due while every connection was busy
const pubIdle = [];
const pubConns = [];
let pubCallback = null; // called after every publish answer
const PAD = 'x'.repeat(Math.max(0, PAYLOAD_BYTES - 40));
const PRODUCTS = [
  ['Mechanical keyboard, brown switches', '129.00'], ['USB-C cable 2 m, braided', '12.95'],
  ['Wrist rest, memory foam', '24.00'], ['Keycap set, PBT, grey', '45.00'],
  ['Desk mat, large, felt', '26.00'], ['Monitor arm, single', '89.90'],
  ['Webcam 1080p with privacy shutter', '59.00'], ['Noise-cancelling headset', '149.00'],
];
const CITIES = [['London', 'GB'], ['Lyon', 'FR'], ['Leipzig', 'DE'], ['Lisbon', 'PT'], ['Leiden', 'NL']];
// A realistic event of about 1 KB: an order update as a shop would publish it. Ids, amounts,
// items and times change with every publish, so compression cannot lean on repeats across
// messages (each is compressed on its own anyway, server_no_context_takeover).
function orderPayload(t, seq) {
  const id = crypto.randomBytes(6).toString('hex');
  const items = [];
  let total = 0;
  for (let k = 0; k < 3 + (seq % 3); k++) {
    const [name, price] = PRODUCTS[(seq + k * 3) % PRODUCTS.length];
    const qty = 1 + ((seq + k) % 3);
    total += qty * Number(price);
    items.push({ sku: `SKU-${10000 + ((seq * 7 + k * 13) % 90000)}`, name, qty, unit_price: price });
  }
  const [city, country] = CITIES[seq % CITIES.length];
  const order = {
    type: 'order.updated', order_id: `ord_${id}`, status: ['paid', 'packed', 'shipped'][seq % 3],
    customer: { id: `cus_${seq % 9973}`, name: 'Ada Lovelace', email: `ada.${seq % 97}@example.com`, tier: 'gold' },
    currency: 'EUR', total: total.toFixed(2), updated_at: new Date().toISOString(), items,
    shipping: {
      carrier: 'DHL', tracking: `JD01460000${crypto.randomBytes(5).toString('hex')}`,
      address: { line1: `${1 + (seq % 200)} Analytical Street`, city, postcode: `N${seq % 20} 9GU`, country },
    },
    note: 'Leave with the neighbour if nobody answers.',
  };
  return `{"bench_t":${t},"seq":${seq},"order":${JSON.stringify(order)}}`;
}

class PubConn {
  constructor() {
    this.reader = new HttpReader((st) => this.onResponse(st));
    this.open();
  }
  open() {
    const s = connectSocket((c) => {
      try { this.reader.feed(c); } catch (e) { protoError(`publisher: ${e.message}`); s.destroy(); }
    });
    this.sock = s;
    this.busy = false;
    this.ready = false;
    this.reader.reset();
    s.on('connect', () => { this.ready = true; pubIdle.push(this); drainPubQueue(); });
    s.on('error', (e) => { bump(stats.errors, `publisher ${e.code || e.message}`); });
    s.on('close', () => {
      if (s !== this.sock || stopping) return;
      const i = pubIdle.indexOf(this);
      if (i !== -1) pubIdle.splice(i, 1);
      if (this.busy) { // the request was lost with the connection
        this.busy = false;
        pubOutstanding--;
        pubErrors++;
        bump(stats.pubStatus, 'closed');
        if (pubCallback) pubCallback();
      }
      setTimeout(() => { if (!stopping) this.open(); }, 50);
    });
  }
  send() {
    const t = Math.round(nowUs());
    const seq = pubSeq++;
    const payload = PAYLOAD_KIND === 'json' ? orderPayload(t, seq) : `{"bench_t":${t},"seq":${seq},"pad":"${PAD}"}`;
    let req;
    if (TARGET === 'tidings') {
      const body = `{"channel":${JSON.stringify(CHANNEL)},"data":${payload}}`;
      req = `POST ${PATHS.pub} HTTP/1.1\r\nHost: ${HOSTHDR}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    } else {
      req = `POST ${PATHS.pub} HTTP/1.1\r\nHost: ${HOSTHDR}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`;
    }
    this.busy = true;
    pubOutstanding++;
    this.sock.write(req);
  }
  onResponse(st) {
    bump(stats.pubStatus, st);
    if (st < 200 || st >= 300) pubErrors++;
    this.busy = false;
    pubOutstanding--;
    pubIdle.push(this);
    drainPubQueue();
    if (pubCallback) pubCallback();
  }
}

function publishOne() {
  const c = pubIdle.pop();
  if (c) c.send();
  else pubQueue++;
}
function drainPubQueue() {
  while (pubQueue > 0 && pubIdle.length) { pubQueue--; pubIdle.pop().send(); }
}
function openPublishers() {
  for (let k = 0; k < PUB_CONNS; k++) pubConns.push(new PubConn());
  return waitFor(() => pubIdle.length === PUB_CONNS, 10000, 5);
}

// ---------------------------------------------------------------- phases
// Wait until every publish is answered and every alive subscriber has every message, or
// until nothing arrives for idleMs, or timeoutMs in all.
function drain(rec0, published, forgiven, idleMs, timeoutMs) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let last = received;
    let lastChange = Date.now();
    const tick = () => {
      const now = Date.now();
      if (received !== last) { last = received; lastChange = now; }
      const complete = pubOutstanding === 0 && pubQueue === 0 && received - rec0 + forgiven >= published * alive;
      if (complete) resolve('complete');
      else if (pubOutstanding === 0 && pubQueue === 0 && now - lastChange >= idleMs) resolve('idle');
      else if (now - t0 >= timeoutMs) resolve('timeout');
      else setTimeout(tick, 2);
    };
    tick();
  });
}

// Where a publishing phase starts from: the counters, the latency histogram emptied.
function phaseStart() {
  resetLatency();
  return { rec0: received, bytes0: subBytes, pubErr0: pubErrors, cpu0: process.cpuUsage(), t0: performance.now() };
}

function phaseResult(kind, start, published, extra) {
  const { rec0, bytes0, pubErr0, cpu0, t0 } = start;
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  return Object.assign({
    phase: kind,
    published,
    publishErrors: pubErrors - pubErr0,
    received: received - rec0,
    expected: published * alive,
    alive,
    wallMs,
    latencySamples: histCount,
    p50ms: percentileMs(0.5),
    p90ms: percentileMs(0.9),
    p99ms: percentileMs(0.99),
    maxms: histCount ? latMaxUs / 1000 : null,
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    subBytes: subBytes - bytes0,
  }, extra, { bytes0 });
}

async function warmup(msg) {
  const count = msg.count || 3;
  const results = [];
  for (let k = 0; k < count; k++) {
    const rec0 = received;
    const t0 = performance.now();
    publishOne();
    const ok = await waitFor(() => received - rec0 >= alive && pubOutstanding === 0, msg.timeoutMs || 10000, 2);
    results.push({ received: received - rec0, alive, ok, ms: performance.now() - t0 });
    await waitFor(() => false, 50, 5);
  }
  return { ok: results.every((r) => r.ok), rounds: results };
}

async function ratePhase(msg) {
  const rate = msg.rate;
  const total = Math.max(1, Math.round(rate * msg.durationS));
  const start = phaseStart();
  const { rec0, t0 } = start;
  let sent = 0;
  let late = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const elapsed = performance.now() - t0;
      const due = Math.min(total, Math.floor((elapsed * rate) / 1000) + 1);
      if (due - sent > 1) late += due - sent - 1;
      while (sent < due) { publishOne(); sent++; }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(0, (sent * 1000) / rate - elapsed));
    };
    tick();
  });
  const sendMs = performance.now() - t0;
  const end = await drain(rec0, sent, 0, msg.idleMs || 1500, msg.drainTimeoutMs || 15000);
  return phaseResult('rate', start, sent, { targetRate: rate, sendMs, late, drain: end });
}

async function saturatePhase(msg) {
  const inflight = msg.inflight || 4;
  const maxPub = msg.maxPublishes || 100000;
  const durMs = msg.durationS * 1000;
  const stallMs = msg.stallMs || 1000;
  const start = phaseStart();
  const { rec0, t0 } = start;
  let sent = 0;
  let forgiven = 0; // deliveries given up on after a stall (messages a subscriber never got)
  let stalls = 0;
  let sending = true;
  let lastRec = received;
  let lastProgress = t0;
  const pump = () => {
    while (sending) {
      if (sent >= maxPub || performance.now() - t0 >= durMs) { sending = false; break; }
      if (pubOutstanding + pubQueue >= inflight) break;
      if (sent * alive - (received - rec0) - forgiven >= inflight * alive) break;
      publishOne();
      sent++;
    }
  };
  onDelivery = pump;
  pubCallback = pump;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      if (received !== lastRec) { lastRec = received; lastProgress = now; }
      if (sending && now - lastProgress >= stallMs && pubOutstanding === 0) {
        const deficit = sent * alive - (received - rec0) - forgiven;
        if (deficit > 0) { forgiven += deficit; stalls++; }
        lastProgress = now;
      }
      pump();
      if (!sending) resolve();
      else setTimeout(tick, 20);
    };
    tick();
  });
  onDelivery = null;
  pubCallback = null;
  const sendMs = performance.now() - t0;
  const end = await drain(rec0, sent, forgiven, msg.idleMs || 1500, msg.drainTimeoutMs || 15000);
  return phaseResult('saturate', start, sent, { inflight, sendMs, stalls, forgiven, drain: end });
}

function status() {
  const alivePerPort = {};
  for (const s of subs) if (s.ready && !s.closed) bump(alivePerPort, s.port);
  return { alive, alivePerPort, subs: subs.length, received, stats, pubOutstanding, pubQueue, memRssKb: Math.round(process.memoryUsage().rss / 1024) };
}

let stopping = false;
function shutdown(code) {
  stopping = true;
  for (const s of subs) { s.stopping = true; if (s.sock) s.sock.destroy(); }
  for (const p of pubConns) if (p.sock) p.sock.destroy();
  setTimeout(() => process.exit(code), 50);
}

// ---------------------------------------------------------------- command loop
const commands = {
  async hello() { const ok = await openPublishers(); return { ok, pid: process.pid, publishers: pubIdle.length }; },
  async connect(msg) {
    return connectMany(msg.n, msg.window || 500, msg.timeoutMs || 120000, msg.retries === undefined ? 2 : msg.retries);
  },
  warmup,
  rate: ratePhase,
  saturate: saturatePhase,
  async status() { return status(); },
  async quit() { setTimeout(() => shutdown(0), 10); return { ok: true }; },
};

serveCommands(commands, { end: shutdown, maxLifetimeS: MAX_LIFETIME_S, log });
