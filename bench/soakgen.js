'use strict';
// Load generator for bench/soak.py: thousands of subscribers over the four techniques
// (WebSocket, SSE, long poll, short poll), a steady publisher, churn and slow readers, in one
// Node.js process. Every subscriber checks every event it receives against the cursor model:
// per channel the offsets must arrive as 1, 2, 3 ... with nothing lost, nothing twice and
// nothing out of order, and a reset only where history really could not cover the gap.
//
// Usage: node soakgen.js '<json config>'   (started by soak.py, pinned to a core)
// Commands arrive on stdin, one JSON object a line; every answer is one JSON line on stdout.
// Diagnostics go to stderr. The process exits when stdin closes or after cfg.maxLifetimeS.

const crypto = require('crypto');
const {
  bump, waitFor, takeHead, Chunked, HttpReader, connector, maskedFrame, eachFrame, serveCommands,
} = require('./genlib');

const cfg = JSON.parse(process.argv[2] || '{}');
const HOST = '127.0.0.1';
const PORT = cfg.port;
const CHANNELS = cfg.channels || []; // followed by the subscribers, spread over them
// Followed by the slow readers only, with large events, so that a reader that stops reading
// fills its socket buffers and the server's write buffer within seconds.
const BULK = cfg.bulkChannel || null;
const BULK_RATE = cfg.bulkRate || 0;
const BULK_PAD = 'x'.repeat(Math.max(0, cfg.bulkPadBytes || 8000));
const HISTORY_SIZE = cfg.historySize || 100;
const BULK_HISTORY_SIZE = cfg.bulkHistorySize || HISTORY_SIZE;
const HISTORY_TTL_MS = (cfg.historyTtlS || 300) * 1000;
const POLL_TIMEOUT_S = cfg.pollTimeoutS || 25;
const SHORT_POLL_MS = (cfg.shortPollS || 5) * 1000;
const PAD = 'x'.repeat(Math.max(0, cfg.padBytes || 300));
const RUN_ID = cfg.runId || crypto.randomBytes(4).toString('hex');
const MAX_LIFETIME_S = cfg.maxLifetimeS || 7200;
const HOSTHDR = `${HOST}:${PORT}`;

if (!PORT || CHANNELS.length === 0) {
  process.stderr.write('soakgen: bad config ' + JSON.stringify(cfg) + '\n');
  process.exit(2);
}

function log(msg) { process.stderr.write(`soakgen: ${msg}\n`); }

// ---------------------------------------------------------------- counters
const TECHNIQUES = ['websocket', 'sse', 'long_poll', 'short_poll'];
const totals = {
  duplicates: 0, // an offset received again
  outOfOrder: 0, // an offset that was missing arrived after a later one
  badData: 0, // the event's data did not match its offset
  foreign: 0, // an id of another epoch, or beyond what was acknowledged, without a reset
  resets: 0,
  resetsJustified: 0, // the gap really was beyond history (size or age)
  resetsUnjustified: 0,
  resetDetails: [], // the first few, for the report
  protocolErrors: 0,
  protocolSamples: [],
  serverCloses: {}, // why the server ended a connection we did not end -> count
  slowReaderCloses: 0, // slow readers cut by the server while they were not reading
  slowReaderPauses: 0,
  churned: 0, // connections we closed on purpose and reopened with the cursor
  reconnects: 0, // every reopen, churned or not
  connectFailures: {},
  subscribeRefused: {}, // WebSocket subscribes answered with an error (retried), by code
  pollStatus: {},
};
function protoError(msg) {
  totals.protocolErrors++;
  if (totals.protocolSamples.length < 20) { totals.protocolSamples.push(msg); log(msg); }
}

// Lag histograms per technique, 1 ms bins up to 120 s, reset every minute.
const LAG_BINS = 120000;
const lag = {};
for (const t of TECHNIQUES) lag[t] = { hist: new Uint32Array(LAG_BINS + 1), n: 0, max: 0 };
const received = {}; // per technique, since the last minute
for (const t of TECHNIQUES) received[t] = 0;
let receivedTotal = 0;
function recordLag(tech, ts) {
  let ms = Date.now() - ts;
  if (ms < 0) ms = 0;
  const h = lag[tech];
  if (ms > h.max) h.max = ms;
  h.hist[Math.min(LAG_BINS, Math.floor(ms))]++;
  h.n++;
}
function p99(tech) {
  const h = lag[tech];
  if (h.n === 0) return null;
  const want = Math.ceil(h.n * 0.99);
  let acc = 0;
  for (let b = 0; b <= LAG_BINS; b++) {
    acc += h.hist[b];
    if (acc >= want) return b === LAG_BINS ? h.max : b + 1;
  }
  return h.max;
}

// ---------------------------------------------------------------- the publisher's record
// Per channel: the epoch, the offset the run started from, and the time each acknowledged
// offset was published (to tell a justified reset from an unjustified one).
const chanInfo = new Map(); // channel -> { epoch, start, acked, ackTimes: [] }

function splitId(id) {
  const dot = typeof id === 'string' ? id.lastIndexOf('.') : -1;
  if (dot <= 0) return null;
  const offset = Number(id.slice(dot + 1));
  if (!Number.isInteger(offset) || offset < 0) return null;
  return { epoch: id.slice(0, dot), offset };
}

// One subscriber's position in one channel.
class Position {
  constructor(channel) {
    const info = chanInfo.get(channel);
    this.channel = channel;
    this.epoch = info.epoch;
    this.start = info.start;
    this.last = info.start;
    this.missing = null; // offsets skipped over and not (yet) received
    this.skipped = 0; // offsets a justified reset skipped
  }
  cursor() { return `${this.epoch}.${this.last}`; }
  event(tech, id, ts, data, slow) {
    const c = splitId(id);
    if (c === null) { protoError(`bad event id ${JSON.stringify(id)}`); return; }
    const info = chanInfo.get(this.channel);
    if (c.epoch !== this.epoch || c.offset > info.acked + info.inflight) {
      totals.foreign++;
      if (totals.foreign <= 5) log(`foreign id ${id} on ${this.channel} (at ${this.cursor()}, acked ${info.acked})`);
      return;
    }
    if (!data || data.k !== c.offset) totals.badData++;
    // A slow reader's lag is its own pauses: kept out of the technique's figures.
    if (typeof ts === 'number' && !slow) recordLag(tech, ts);
    received[tech]++;
    receivedTotal++;
    if (c.offset === this.last + 1) { this.last = c.offset; return; }
    if (c.offset > this.last + 1) {
      if (this.missing === null) this.missing = new Set();
      for (let o = this.last + 1; o < c.offset; o++) this.missing.add(o);
      this.last = c.offset;
      return;
    }
    if (this.missing !== null && this.missing.delete(c.offset)) {
      totals.outOfOrder++;
      if (this.missing.size === 0) this.missing = null;
    } else {
      totals.duplicates++;
    }
  }
  reset(id, reason) {
    const c = splitId(id);
    totals.resets++;
    const info = chanInfo.get(this.channel);
    const gap = c === null ? -1 : c.offset - this.last;
    const firstSkipped = info.ackTimes[this.last + 1 - info.start - 1];
    const age = firstSkipped === undefined ? 0 : Date.now() - firstSkipped;
    const size = this.channel === BULK ? BULK_HISTORY_SIZE : HISTORY_SIZE;
    const justified = c !== null && c.epoch === this.epoch && (gap > size || age > HISTORY_TTL_MS);
    if (justified) totals.resetsJustified++;
    else totals.resetsUnjustified++;
    if (totals.resetDetails.length < 10) {
      totals.resetDetails.push({ channel: this.channel, from: this.cursor(), to: id, reason, gap, ageMs: age, justified });
    }
    if (c !== null && c.epoch === this.epoch && c.offset >= this.last) {
      this.skipped += c.offset - this.last;
      this.last = c.offset;
    }
  }
}

// Sockets to the server, reading into the one buffer genlib.js shares.
const connectSocket = connector(HOST, PORT);

// ---------------------------------------------------------------- subscribers
let stopping = false;
const subs = [];
const ALL_CHANNELS = BULK ? [...CHANNELS, BULK] : CHANNELS;
const RECONNECT_MS = 100;
const MAX_FAILURES = 50; // consecutive failed reconnects before a subscriber gives up

// A subscriber: one connection at a time, reopened from its cursor whenever it ends.
class Sub {
  constructor(idx, tech, channels, slow) {
    this.idx = idx;
    this.tech = tech;
    this.slow = slow;
    this.positions = channels.map((ch) => new Position(ch));
    this.byChannel = new Map(this.positions.map((p) => [p.channel, p]));
    this.sock = null;
    this.ready = false; // the current connection can receive
    this.everReady = false;
    this.churning = false; // we are closing it on purpose
    this.paused = false;
    this.failures = 0;
    this.gaveUp = false;
    this.onReady = null;
  }
  position(channel) {
    const p = this.byChannel.get(channel);
    if (p === undefined) protoError(`${this.tech} ${this.idx}: event of unknown channel ${channel}`);
    return p;
  }
  open() {
    this.ready = false;
    this.closeReason = null;
    this.lastError = null;
    const s = connectSocket((chunk) => {
      if (s !== this.sock) return;
      try { this.onData(chunk); } catch (e) { protoError(`${this.tech} ${this.idx}: ${e.message}`); s.destroy(); }
    });
    this.sock = s;
    s.on('error', (e) => { this.lastError = e.code || e.message; });
    s.on('close', () => { if (s === this.sock) this.onSockClose(); });
    s.on('connect', () => { if (s === this.sock) this.onConnect(); });
  }
  becameReady() {
    this.ready = true;
    this.failures = 0;
    if (!this.everReady) { this.everReady = true; if (this.onReady) { const f = this.onReady; this.onReady = null; f(null); } }
  }
  onSockClose() {
    const wasReady = this.ready;
    this.ready = false;
    if (stopping) return;
    if (this.churning) { this.churning = false; totals.churned++; }
    else if (this.slow && this.paused) totals.slowReaderCloses++;
    else if (wasReady) bump(totals.serverCloses, `${this.tech}: ${this.closeReason || this.lastError || 'eof'}`);
    else {
      this.failures++;
      bump(totals.connectFailures, `${this.tech}: ${this.closeReason || this.lastError || 'eof'}`);
      if (this.failures > MAX_FAILURES) {
        this.gaveUp = true;
        if (this.onReady) { const f = this.onReady; this.onReady = null; f(new Error(this.lastError || 'failed')); }
        return;
      }
    }
    if (this.slow && this.paused) this.paused = false;
    totals.reconnects++;
    setTimeout(() => { if (!stopping) this.open(); }, this.failures ? RECONNECT_MS * Math.min(this.failures, 20) : 0);
  }
  churn() {
    if (!this.ready || this.sock === null) return false;
    this.churning = true;
    this.sock.destroy();
    return true;
  }
}

const SUBSCRIBED = '"subscribed"';
class WsSub extends Sub {
  onConnect() {
    this.head = null; this.hbuf = null; this.wbuf = null; this.pending = this.positions.length;
    const key = crypto.randomBytes(16).toString('base64');
    this.sock.write(`GET /ws HTTP/1.1\r\nHost: ${HOSTHDR}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
      + `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  }
  onData(chunk) {
    if (this.head === null) {
      const r = takeHead(this, chunk);
      if (r === null) return;
      if (this.head.status !== 101) {
        this.closeReason = `http ${this.head.status}`;
        this.sock.destroy();
        return;
      }
      this.positions.forEach((p, i) => {
        const msg = { op: 'subscribe', channel: p.channel, since: p.cursor(), ref: i + 1 };
        this.sock.write(maskedFrame(1, Buffer.from(JSON.stringify(msg))));
      });
      if (r[1] < r[0].length) this.frames(r[0].subarray(r[1]));
      return;
    }
    this.frames(chunk);
  }
  frames(buf) {
    if (this.wbuf) { buf = Buffer.concat([this.wbuf, buf]); this.wbuf = null; }
    const off = eachFrame(buf, 0, buf.length, (b0, ps, pe) => {
      const op = b0 & 0x0f;
      if (op === 1) this.message(buf.toString('utf8', ps, pe));
      else if (op === 9) this.sock.write(maskedFrame(10, buf.subarray(ps, pe)));
      else if (op === 8) {
        this.closeReason = `close ${pe - ps >= 2 ? buf.readUInt16BE(ps) : 1005}`;
        this.sock.destroy();
        return true;
      }
      return false;
    });
    if (off !== -1 && off < buf.length) this.wbuf = Buffer.from(buf.subarray(off));
  }
  message(text) {
    const m = JSON.parse(text);
    if (m.op === 'event') {
      const p = this.position(m.channel);
      if (p) p.event('websocket', m.id, m.ts, m.data, this.slow);
    } else if (m.op === 'subscribed') {
      if (m.recovered === false) { /* a reset follows */ }
      if (--this.pending === 0) this.becameReady();
    } else if (m.op === 'reset') {
      const p = this.position(m.channel);
      if (p) p.reset(m.id, m.reason);
    } else if (m.op === 'error' && Number.isInteger(m.ref) && this.positions[m.ref - 1]) {
      // The subscribe was refused (the broker unavailable): ask again, as a client would.
      bump(totals.subscribeRefused, m.code);
      const p = this.positions[m.ref - 1];
      const s = this.sock;
      this.refusals = (this.refusals || 0) + 1;
      setTimeout(() => {
        if (s !== this.sock || s.destroyed || stopping) return;
        const msg = { op: 'subscribe', channel: p.channel, since: p.cursor(), ref: m.ref };
        s.write(maskedFrame(1, Buffer.from(JSON.stringify(msg))));
      }, Math.min(5000, 500 * this.refusals));
    } else if (text.indexOf(SUBSCRIBED) === -1) {
      protoError(`websocket ${this.idx}: unexpected ${text.slice(0, 200)}`);
    }
  }
}

class SseSub extends Sub {
  onConnect() {
    this.head = null; this.hbuf = null; this.carry = ''; this.chunked = null;
    const qs = this.positions.map((p) => `channel=${encodeURIComponent(p.channel)}`).join('&');
    // Like a browser's EventSource: the first request names where to start, a reconnect sends
    // the last id: line it parsed.
    const resume = this.lastEventId
      ? `Last-Event-ID: ${this.lastEventId}\r\n`
      : '';
    const since = this.lastEventId ? '' : `&since=${encodeURIComponent(this.positions.map((p) => p.cursor()).join(','))}`;
    this.sock.write(`GET /sse?${qs}${since}&envelope=1 HTTP/1.1\r\nHost: ${HOSTHDR}\r\nAccept: text/event-stream\r\n${resume}\r\n`);
  }
  onData(chunk) {
    if (this.head === null) {
      const r = takeHead(this, chunk);
      if (r === null) return;
      if (this.head.status !== 200) {
        this.closeReason = `http ${this.head.status}`;
        this.sock.destroy();
        return;
      }
      if (this.head.get('transfer-encoding').toLowerCase().includes('chunked')) this.chunked = new Chunked();
      this.becameReady();
      if (r[1] < r[0].length) this.body(r[0], r[1]);
      return;
    }
    this.body(chunk, 0);
  }
  body(buf, start) {
    if (this.chunked) {
      if (this.chunked.feed(buf, start, (b, s, e) => this.text(b.toString('utf8', s, e))) !== -1) {
        this.closeReason = 'stream ended';
        this.sock.destroy();
      }
    } else {
      this.text(buf.toString('utf8', start));
    }
  }
  // Only complete events (up to the last blank line) are handled, as a browser does.
  text(t) {
    const all = this.carry + t;
    const last = all.lastIndexOf('\n\n');
    if (last === -1) { this.carry = all; return; }
    this.carry = all.slice(last + 2);
    for (const block of all.slice(0, last).split('\n\n')) this.sseEvent(block);
  }
  sseEvent(block) {
    let id = null;
    let name = 'message';
    let data = null;
    for (const line of block.split('\n')) {
      if (line.startsWith('id:')) id = line.slice(3).trim();
      else if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data = data === null ? line.slice(5).trimStart() : `${data}\n${line.slice(5).trimStart()}`;
    }
    if (data !== null) {
      const m = JSON.parse(data);
      if (name === 'tidings.reset') {
        const p = this.position(m.channel);
        if (p) p.reset(m.id, m.reason);
      } else {
        const p = this.position(m.channel);
        if (p) p.event('sse', m.id, m.ts, m.data, this.slow);
      }
    }
    if (id !== null) this.lastEventId = id;
  }
}

class PollSub extends Sub {
  constructor(idx, tech, channels, slow) {
    super(idx, tech, channels, slow);
    this.long = tech === 'long_poll';
    this.cursor = this.positions.map((p) => p.cursor()).join(',');
    this.etag = '';
    this.timer = null;
  }
  onConnect() {
    this.reader = new HttpReader((st, h, body) => this.onResponse(st, h, body));
    this.becameReady();
    this.request();
  }
  onData(chunk) { this.reader.feed(chunk); }
  request() {
    this.timer = null;
    if (!this.ready || stopping) return;
    const qs = this.positions.map((p) => `channel=${encodeURIComponent(p.channel)}`).join('&');
    const timeout = this.long ? POLL_TIMEOUT_S : 0;
    const cond = this.etag && !this.long ? `If-None-Match: ${this.etag}\r\n` : '';
    this.sock.write(`GET /poll?${qs}&since=${encodeURIComponent(this.cursor)}&timeout=${timeout} HTTP/1.1\r\nHost: ${HOSTHDR}\r\n${cond}\r\n`);
  }
  onResponse(st, h, body) {
    bump(totals.pollStatus, `${this.tech} ${st}`);
    if (st === 200) {
      const m = JSON.parse(body.toString('utf8'));
      for (const r of m.resets || []) { const p = this.position(r.channel); if (p) p.reset(r.id, r.reason); }
      for (const e of m.events) { const p = this.position(e.channel); if (p) p.event(this.tech, e.id, e.ts, e.data, this.slow); }
      if (typeof m.cursor === 'string') this.cursor = m.cursor;
      else protoError(`poll 200 without a cursor`);
    } else if (st === 204 || st === 304) {
      const cur = h.get('tidings-cursor');
      if (cur) this.cursor = cur;
    } else if (st !== 503) { // 503: the broker is unavailable, asked again below
      protoError(`${this.tech} answered ${st}: ${body.toString('utf8', 0, Math.min(200, body.length))}`);
    }
    const etag = h.get('etag');
    if (etag) this.etag = etag;
    if (h.get('connection').toLowerCase() === 'close') return; // reopened on close
    const wait = this.long ? (st >= 400 ? 1000 : 0) : SHORT_POLL_MS * (0.8 + 0.4 * Math.random());
    if (wait === 0) this.request();
    else this.timer = setTimeout(() => this.request(), wait);
  }
  onSockClose() {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    super.onSockClose();
  }
}

const SUB_CLASS = { websocket: WsSub, sse: SseSub, long_poll: PollSub, short_poll: PollSub };

// ---------------------------------------------------------------- slow readers
// A slow reader follows every channel and now and then stops reading for slowPauseS; the
// server's slow-consumer policy is expected to cut it, and it resumes from its cursor.
const slowTimers = [];
function slowCycle(sub) {
  if (stopping || !running) return;
  if (sub.ready && !sub.paused) {
    sub.paused = true;
    totals.slowReaderPauses++;
    sub.sock.pause();
    const s = sub.sock;
    slowTimers.push(setTimeout(() => {
      if (s === sub.sock && !s.destroyed) { s.resume(); }
      // a pause that was not cut counts as a normal reader again
      setTimeout(() => { if (s === sub.sock) sub.paused = false; }, 2000);
    }, cfg.slowPauseS * 1000));
  }
  slowTimers.push(setTimeout(() => slowCycle(sub), (cfg.slowPauseS + cfg.slowReadS) * 1000));
}

// ---------------------------------------------------------------- connecting
function connectAll(msg) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const plan = [];
    for (const t of TECHNIQUES) for (let k = 0; k < (msg.counts[t] || 0); k++) plan.push(t);
    let next = 0;
    let pending = 0;
    let ok = 0;
    let failed = 0;
    let finished = false;
    const timer = setTimeout(() => finish('timeout'), msg.timeoutMs || 180000);
    function finish(why) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ connected: ok, failed, pendingAtEnd: pending, ms: Date.now() - t0, end: why });
    }
    function pump() {
      if (finished) return;
      while (pending < (msg.window || 200) && next < plan.length) {
        const idx = subs.length;
        const tech = plan[next++];
        const sub = new (SUB_CLASS[tech])(idx, tech, [CHANNELS[idx % CHANNELS.length]], false);
        subs.push(sub);
        pending++;
        sub.onReady = (err) => { pending--; if (err) failed++; else ok++; pump(); };
        sub.open();
      }
      if (next >= plan.length && pending === 0) finish('done');
    }
    // Slow readers first: a WebSocket and an SSE stream (alternating) on every channel.
    for (let k = 0; k < (msg.slowReaders || 0); k++) {
      const tech = k % 2 === 0 ? 'websocket' : 'sse';
      const sub = new (SUB_CLASS[tech])(subs.length, tech, ALL_CHANNELS, true);
      subs.push(sub);
      sub.open();
    }
    pump();
  });
}

// ---------------------------------------------------------------- publisher
// One keep-alive connection per channel, one publish at a time on it, so that the k-th
// acknowledged event of a channel must carry offset start + k. A failed publish is retried
// with the same idempotency key.
let running = false;
const publishers = new Map(); // channel -> Publisher
let pubErrors = {};
let pubAcked = 0;
let pubLate = 0;

class Publisher {
  constructor(channel) {
    this.channel = channel;
    this.queue = 0;
    this.busy = false;
    this.attempts = 0;
    this.open();
  }
  open() {
    const s = connectSocket((c) => {
      if (s !== this.sock) return;
      try { this.reader.feed(c); } catch (e) { protoError(`publisher: ${e.message}`); s.destroy(); }
    });
    this.sock = s;
    this.reader = new HttpReader((st, h, body) => this.onResponse(st, body));
    this.connected = false;
    s.on('connect', () => { this.connected = true; this.next(); });
    s.on('error', (e) => { bump(pubErrors, e.code || e.message); });
    s.on('close', () => {
      if (s !== this.sock || stopping) return;
      this.connected = false;
      if (this.busy) { this.busy = false; chanInfo.get(this.channel).inflight = 0; }
      setTimeout(() => { if (!stopping) this.open(); }, 200);
    });
  }
  next() {
    if (this.busy || !this.connected || this.queue === 0) return;
    const info = chanInfo.get(this.channel);
    const k = info.acked + 1;
    const body = JSON.stringify({
      channel: this.channel,
      data: { k, pad: this.channel === BULK ? BULK_PAD : PAD },
      idempotency_key: `${RUN_ID}-${k}`,
    });
    this.busy = true;
    info.inflight = 1;
    this.sent = k;
    this.sock.write(`POST /api/publish HTTP/1.1\r\nHost: ${HOSTHDR}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }
  onResponse(st, body) {
    this.busy = false;
    const info = chanInfo.get(this.channel);
    info.inflight = 0;
    if (st === 200) {
      const c = splitId(JSON.parse(body.toString('utf8')).id);
      if (c === null || c.epoch !== info.epoch || c.offset !== this.sent) {
        protoError(`publish ${this.channel} k=${this.sent} acknowledged as ${body.toString('utf8', 0, 200)}`);
      }
      info.acked = this.sent;
      info.ackTimes.push(Date.now());
      pubAcked++;
      this.queue--;
      this.attempts = 0;
    } else {
      bump(pubErrors, `http ${st}`);
      this.attempts++;
      if (this.attempts > 50) { protoError(`publish ${this.channel} failed 50 times, last ${st}`); this.queue = 0; return; }
      setTimeout(() => this.next(), 200);
      return;
    }
    this.next();
  }
}

const pubTimers = [];
function startPublishing(channels, rate) {
  for (const ch of channels) publishers.set(ch, new Publisher(ch));
  const t0 = Date.now();
  let sent = 0;
  const tick = () => {
    if (!running) return;
    const due = Math.floor(((Date.now() - t0) * rate) / 1000) + 1;
    while (sent < due) {
      const p = publishers.get(channels[sent % channels.length]);
      sent++;
      if (p.queue >= 100) { pubLate++; continue; } // bounded: a stuck channel skips its turn
      p.queue++;
      p.next();
    }
    pubTimers.push(setTimeout(tick, Math.max(1, (sent * 1000) / rate - (Date.now() - t0))));
    if (pubTimers.length > 100) pubTimers.splice(0, 50);
  };
  tick();
}

// ---------------------------------------------------------------- churn
let churnTimer = null;
function startChurn(fractionPerMinute) {
  const normal = subs.filter((s) => !s.slow);
  const perSecond = (normal.length * fractionPerMinute) / 60;
  let owed = 0;
  churnTimer = setInterval(() => {
    if (!running) return;
    owed += perSecond;
    let tries = 0;
    while (owed >= 1 && tries < 10 * perSecond + 10) {
      tries++;
      const s = normal[Math.floor(Math.random() * normal.length)];
      if (s.churn()) owed -= 1;
    }
  }, 1000);
}

// ---------------------------------------------------------------- reports
function connectedCounts() {
  const c = {};
  for (const t of TECHNIQUES) c[t] = 0;
  for (const s of subs) if (s.ready && !s.slow) c[s.tech]++;
  return c;
}
function openGaps() {
  let n = 0;
  for (const s of subs) for (const p of s.positions) if (p.missing) n += p.missing.size;
  return n;
}
function minute() {
  const out = {
    connected: connectedCounts(),
    received: Object.assign({}, received),
    receivedTotal,
    p99ms: {},
    maxms: {},
    acked: pubAcked,
    pubErrors: Object.assign({}, pubErrors),
    pubLate,
    openGaps: openGaps(),
    totals: JSON.parse(JSON.stringify(totals)),
    rssKb: Math.round(process.memoryUsage().rss / 1024),
  };
  for (const t of TECHNIQUES) {
    out.p99ms[t] = p99(t);
    out.maxms[t] = lag[t].n ? lag[t].max : null;
    lag[t].hist.fill(0); lag[t].n = 0; lag[t].max = 0;
    received[t] = 0;
  }
  return out;
}

// Lost: offsets acknowledged after a subscriber's start that it never received (nor skipped
// by a justified reset).
// Skipped: offsets passed over (a later one arrived) and never received. Undelivered: offsets
// after the last one a subscriber received, still missing when the wait for them ended.
function verify() {
  let lost = 0;
  let skipped = 0;
  let undelivered = 0;
  let behind = 0; // subscriber channels not caught up with the last acknowledged offset
  const lostBy = {};
  for (const s of subs) {
    for (const p of s.positions) {
      const acked = chanInfo.get(p.channel).acked;
      const sk = p.missing ? p.missing.size : 0;
      const un = p.last < acked ? acked - p.last : 0;
      if (un) behind++;
      skipped += sk;
      undelivered += un;
      if (sk + un) { lost += sk + un; bump(lostBy, s.slow ? `slow ${s.tech}` : s.tech, sk + un); }
    }
  }
  return { lost, skipped, undelivered, lostBy, behind };
}

function caughtUp() {
  for (const s of subs) {
    if (s.gaveUp) continue;
    for (const p of s.positions) if (p.last < chanInfo.get(p.channel).acked || p.missing) return false;
  }
  return true;
}

// ---------------------------------------------------------------- commands
// Where every channel starts: a short poll without since answers the channel's current cursor.
function probe() {
  return new Promise((resolve, reject) => {
    let i = 0;
    const s = connectSocket((c) => { try { reader.feed(c); } catch (e) { reject(e); } });
    const reader = new HttpReader((st, h, body) => {
      if (st !== 200) { reject(new Error(`probe answered ${st}`)); return; }
      const c = splitId(JSON.parse(body.toString('utf8')).cursor);
      chanInfo.set(ALL_CHANNELS[i], { epoch: c.epoch, start: c.offset, acked: c.offset, inflight: 0, ackTimes: [] });
      i++;
      if (i < ALL_CHANNELS.length) ask();
      else { s.destroy(); resolve(); }
    });
    const ask = () => s.write(`GET /poll?channel=${encodeURIComponent(ALL_CHANNELS[i])} HTTP/1.1\r\nHost: ${HOSTHDR}\r\n\r\n`);
    s.on('connect', ask);
    s.on('error', reject);
  });
}

const commands = {
  async probe() {
    await probe();
    const out = {};
    for (const [ch, info] of chanInfo) out[ch] = `${info.epoch}.${info.start}`;
    return { cursors: out };
  },
  async connect(msg) { return connectAll(msg); },
  async start(msg) {
    running = true;
    startPublishing(CHANNELS, msg.rate);
    if (BULK && BULK_RATE > 0) startPublishing([BULK], BULK_RATE);
    startChurn(msg.churn);
    for (const s of subs) if (s.slow) slowTimers.push(setTimeout(() => slowCycle(s), cfg.slowReadS * 1000));
    return { ok: true };
  },
  async minute() { return minute(); },
  async finish(msg) {
    running = false;
    for (const t of pubTimers) clearTimeout(t);
    clearInterval(churnTimer);
    for (const t of slowTimers) clearTimeout(t);
    for (const s of subs) if (s.slow && s.sock && s.paused) { s.sock.resume(); }
    // Publishes queued or in flight complete; then everyone catches up (short polls within
    // their interval, slow readers after their resume).
    const published = await waitFor(() => [...publishers.values()].every((p) => p.queue === 0 && !p.busy), 30000, 100);
    for (const p of publishers.values()) p.queue = 0;
    const t0 = Date.now();
    const complete = await waitFor(caughtUp, msg.timeoutMs || 60000, 100);
    const last = minute();
    const acked = {};
    for (const [ch, info] of chanInfo) acked[ch] = { epoch: info.epoch, start: info.start, acked: info.acked };
    return Object.assign(last, verify(), {
      publishedAll: published, caughtUp: complete, catchUpMs: Date.now() - t0, channels: acked,
      gaveUp: subs.filter((s) => s.gaveUp).length,
      subscribers: subs.length,
    });
  },
  async close() {
    stopping = true;
    for (const s of subs) if (s.sock) s.sock.destroy();
    for (const p of publishers.values()) if (p.sock) p.sock.destroy();
    return { ok: true };
  },
  async quit() { setTimeout(() => process.exit(0), 10); return { ok: true }; },
};

serveCommands(commands, {
  end(code) { stopping = true; process.exit(code); },
  maxLifetimeS: MAX_LIFETIME_S,
  log,
});
