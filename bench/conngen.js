'use strict';
// Connection holder for bench/connections.py: up to ~19,000 idle SSE or WebSocket subscribers
// in one Node.js process, from source addresses of its own in 127.0.0.0/8, each one watching
// its heartbeats and the events broadcast to every connection. No dependencies: SSE and
// WebSocket are spoken over raw `net` sockets, with the read buffer, the WebSocket frames
// and the command loop of bench/genlib.js (as bench/loadgen.js), and the per-connection state
// kept in typed arrays so that the generator holds as little per socket as the sockets
// themselves need.
//
// Usage: node conngen.js '<json config>'   (started by connections.py, pinned to a core)
// Commands arrive on stdin, one JSON object a line; every answer is one JSON line on stdout.
// The process exits when stdin closes or after cfg.maxLifetimeS.

const net = require('net');
const crypto = require('crypto');
const { performance } = require('perf_hooks');
const { bump, CRLF2, READ_BUF, maskedFrame, eachFrame, serveCommands } = require('./genlib');

const cfg = JSON.parse(process.argv[2] || '{}');
const HOST = cfg.host || '127.0.0.1';
const PORT = cfg.port;
const SOURCES = cfg.sources || []; // local addresses to connect from, in turn
const CHANNEL = cfg.channel || 'conns';
const CAPACITY = cfg.capacity || 19000;
const MAX_LIFETIME_S = cfg.maxLifetimeS || 3600;
const ID = cfg.id || 0;
if (!PORT || !SOURCES.length) {
  process.stderr.write('conngen: bad config ' + JSON.stringify(cfg) + '\n');
  process.exit(2);
}

function log(msg) { process.stderr.write(`conngen[${ID}]: ${msg}\n`); }
// Heartbeat gaps are measured on the monotonic clock; an event's latency on the wall clock,
// which the publisher (another process) stamps it with (read afresh: the machine's clock
// may be stepped during a run).
const nowMs = () => performance.now();

// ---------------------------------------------------------------- per-connection state
const conns = new Array(CAPACITY).fill(null);
const lastBeat = new Float64Array(CAPACITY); // wall ms of the last heartbeat (or of the open)
const maxGap = new Float64Array(CAPACITY); // largest gap between heartbeats since `mark`
const beats = new Uint32Array(CAPACITY); // heartbeats since `mark`
const gotSeq = new Int32Array(CAPACITY).fill(-1); // last broadcast sequence number seen
// A broadcast still unseen when its collect ended: seen later (late) or skipped over (lost).
const owedSeq = new Int32Array(CAPACITY).fill(-1);
const owed = { late: 0, lost: 0, lateMaxMs: 0 };
const watched = new Uint8Array(CAPACITY); // ready when the watched broadcast was published
let alive = 0;
let unexpectedLogged = 0; // the first few frames that came instead of `subscribed` are logged
let markAt = 0;
const stats = { closes: {}, errors: {}, protocol: 0 };

// the broadcast being watched: its seq and the latency of every arrival, in 1 ms bins
let watchSeq = -1;
let watchHist = new Map();
let watchCount = 0;
let watchMax = 0;

function beat(i) {
  const now = nowMs();
  if (lastBeat[i] >= markAt) { const g = now - lastBeat[i]; if (g > maxGap[i]) maxGap[i] = g; }
  lastBeat[i] = now;
  beats[i]++;
}

// An event's data is {"seq":N,"t":MS}; find them in bytes [s, e) of buf.
const SEQ = Buffer.from('"seq":');
const TKEY = Buffer.from('"t":');
function eventSeen(i, buf, s, e) {
  const p = buf.indexOf(SEQ, s);
  if (p === -1 || p >= e) return false;
  const q = buf.indexOf(TKEY, p);
  const seq = parseInt(buf.latin1Slice(p + SEQ.length, p + SEQ.length + 12), 10);
  const t = parseFloat(buf.latin1Slice(q + TKEY.length, q + TKEY.length + 24));
  if (gotSeq[i] === seq) return true;
  gotSeq[i] = seq;
  if (owedSeq[i] !== -1) settleOwed(i, seq, t);
  if (seq === watchSeq && watched[i]) {
    const lat = Date.now() - t;
    const bin = Math.max(0, Math.floor(lat));
    watchHist.set(bin, (watchHist.get(bin) || 0) + 1);
    watchCount++;
    if (lat > watchMax) watchMax = lat;
  }
  return true;
}

function settleOwed(i, seq, t) {
  if (seq === owedSeq[i]) {
    owed.late++;
    owed.lateMaxMs = Math.max(owed.lateMaxMs, Date.now() - t);
  } else if (seq > owedSeq[i]) {
    owed.lost++;
  } else {
    return; // an older broadcast: the owed one may still come
  }
  owedSeq[i] = -1;
}

// ---------------------------------------------------------------- connections
const LF2 = Buffer.from('\n\n');
const SUBSCRIBED = Buffer.from('"subscribed"');
const PING = Buffer.from(': ping');

const SUBSCRIBE_FRAME = maskedFrame(1, Buffer.from(JSON.stringify({ op: 'subscribe', channel: CHANNEL, ref: 1 })));
const EMPTY_PONG = maskedFrame(10, Buffer.alloc(0));

let nextSource = 0;
// One connection; `kind` is 'sse' or 'ws'. States: 0 head awaited, 1 (ws) subscribe sent, 2 ready.
class Conn {
  constructor(i, kind, done) {
    this.i = i;
    this.kind = kind;
    this.state = 0;
    this.carry = null;
    this.done = done;
    const local = SOURCES[nextSource++ % SOURCES.length];
    const s = net.connect({
      host: HOST,
      port: PORT,
      localAddress: local,
      onread: { buffer: READ_BUF, callback: (n, buf) => { this.onBytes(buf, n); } },
    });
    this.sock = s;
    s.on('connect', () => {
      if (kind === 'ws') {
        const key = crypto.randomBytes(16).toString('base64');
        s.write(`GET /ws HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
          + `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      } else {
        s.write(`GET /sse?channel=${CHANNEL} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nAccept: text/event-stream\r\n\r\n`);
      }
    });
    s.on('error', (e) => { this.error = e.code || e.message; });
    s.on('close', () => this.onClose());
  }
  finish(err) {
    const d = this.done;
    this.done = null;
    if (d) d(err, this);
  }
  ready() {
    this.state = 2;
    alive++;
    lastBeat[this.i] = nowMs();
    this.finish(null);
  }
  onClose() {
    if (this.state === 2) { alive--; bump(stats.closes, this.error || 'eof'); }
    if (conns[this.i] === this) conns[this.i] = null;
    this.state = 3;
    this.finish(new Error(this.error || 'closed before ready'));
  }
  fail(why) { stats.protocol++; bump(stats.errors, why); this.error = why; this.sock.destroy(); }
  onBytes(buf, n) {
    let s = 0;
    let e = n;
    if (this.carry) { buf = Buffer.concat([this.carry, buf.subarray(0, n)]); e = buf.length; this.carry = null; }
    if (this.state === 0) {
      const end = buf.indexOf(CRLF2, s);
      if (end === -1 || end >= e) { this.carry = Buffer.from(buf.subarray(s, e)); return; }
      const status = buf.latin1Slice(9, 12);
      if (this.kind === 'ws') {
        if (status !== '101') { this.fail(`ws handshake ${status}`); return; }
        this.sock.write(SUBSCRIBE_FRAME);
        this.state = 1;
      } else {
        if (status !== '200') { this.fail(`sse ${status}`); return; }
        this.ready();
      }
      s = end + 4;
    }
    if (s < e) {
      if (this.kind === 'ws') this.frames(buf, s, e);
      else this.events(buf, s, e);
    }
  }
  // SSE: whole events (up to a blank line); a ping comment is the heartbeat.
  events(buf, s, e) {
    const i = this.i;
    for (;;) {
      const end = buf.indexOf(LF2, s);
      if (end === -1 || end + 2 > e) break;
      if (buf[s] === 0x3a) { if (buf.indexOf(PING, s) === s) beat(i); }
      else eventSeen(i, buf, s, end);
      s = end + 2;
    }
    if (s < e) this.carry = Buffer.from(buf.subarray(s, e));
  }
  // WebSocket: server frames are unmasked and small; a ping is the heartbeat.
  frames(buf, s, e) {
    const i = this.i;
    const end = eachFrame(buf, s, e, (b0, ps, pe) => {
      const op = b0 & 0x0f;
      if (op === 9) {
        beat(i);
        this.sock.write(pe === ps ? EMPTY_PONG : maskedFrame(10, buf.subarray(ps, pe)));
      } else if (op === 1) {
        if (!eventSeen(i, buf, ps, pe) && this.state === 1) {
          const k = buf.indexOf(SUBSCRIBED, ps);
          if (k !== -1 && k < pe) this.ready();
          else {
            if (unexpectedLogged++ < 5) log(`unexpected frame before subscribed: ${buf.toString('utf8', ps, Math.min(pe, ps + 200))}`);
            this.fail('unexpected frame before subscribed');
            return true;
          }
        }
      } else if (op === 8) {
        this.error = `ws close ${pe - ps >= 2 ? buf.readUInt16BE(ps) : 1005}`;
        this.sock.destroy();
        return true;
      }
      return false;
    });
    if (end !== -1 && end < e) this.carry = Buffer.from(buf.subarray(end, e));
  }
}

// Open n more connections of `kind`, at most `window` handshakes in flight; failed attempts
// are retried (a worker at its connection limit refuses; the retry hashes to another).
let halted = false; // `halt`: the climb ends where it is (the machine's memory runs short)
function connectMany(n, kind, windowSize, timeoutMs, retries) {
  halted = false;
  return new Promise((resolve) => {
    const t0 = nowMs();
    let started = 0;
    let pending = 0;
    let ok = 0;
    let failed = 0;
    const failReasons = {};
    let finished = false;
    const free = [];
    for (let i = CAPACITY - 1; i >= 0; i--) if (conns[i] === null) free.push(i);
    if (free.length < n) n = free.length;
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    function finish(why) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ requested: n, connected: ok, failed, pendingAtEnd: pending, failReasons, ms: nowMs() - t0, end: why, alive });
    }
    function attempt(i, left) {
      pending++;
      conns[i] = new Conn(i, kind, (err, c) => {
        pending--;
        if (!err) ok++;
        else {
          if (conns[i] === c) conns[i] = null;
          if (left > 0 && !finished) { pending++; setTimeout(() => { pending--; attempt(i, left - 1); }, 100); return; }
          failed++;
          bump(failReasons, err.message);
        }
        pump();
      });
    }
    function pump() {
      if (finished) return;
      if (halted) { if (pending === 0) finish('halted'); return; }
      while (pending < windowSize && started < n) { attempt(free.pop(), retries); started++; }
      if (started >= n && pending === 0) finish('done');
    }
    pump();
  });
}

function closeAll() {
  return new Promise((resolve) => {
    for (const c of conns) if (c) c.sock.destroy();
    const t0 = Date.now();
    const check = () => {
      if (alive === 0 || Date.now() - t0 > 30000) resolve({ alive });
      else setTimeout(check, 50);
    };
    check();
  });
}

// ---------------------------------------------------------------- measurements
// This holder's own event-loop delay: a heartbeat that reached the socket while the holder
// was busy reading other sockets is read (and its gap measured) that much later. A 100 ms
// timer that fires late says by how much, at most, since the mark.
const LOOP_TICK_MS = 100;
let loopLagMaxMs = 0;
let loopExpected = nowMs() + LOOP_TICK_MS;
setInterval(() => {
  const now = nowMs();
  const late = now - loopExpected;
  if (late > loopLagMaxMs) loopLagMaxMs = late;
  loopExpected = now + LOOP_TICK_MS;
}, LOOP_TICK_MS).unref();

function gaps() {
  const now = nowMs();
  let worst = 0;
  let silent = 0; // connections without any heartbeat since the mark
  let ready = 0;
  const hist = new Map(); // per connection largest gap, in 100 ms bins
  for (let i = 0; i < CAPACITY; i++) {
    const c = conns[i];
    if (!c || c.state !== 2) continue;
    ready++;
    const open = now - Math.max(lastBeat[i], markAt);
    const g = Math.max(maxGap[i], beats[i] ? open : 0);
    if (!beats[i]) silent++;
    else {
      if (g > worst) worst = g;
      const bin = Math.floor(g / 100);
      hist.set(bin, (hist.get(bin) || 0) + 1);
    }
  }
  return {
    ready, silent, worstMs: worst, hist: Object.fromEntries(hist), windowMs: now - markAt,
    loopLagMaxMs,
  };
}

function usage() {
  const u = process.cpuUsage();
  const m = process.memoryUsage();
  return { cpuUs: u.user + u.system, rssKb: Math.round(m.rss / 1024), heapKb: Math.round(m.heapUsed / 1024) };
}

const commands = {
  async hello() { return { pid: process.pid, capacity: CAPACITY }; },
  async connect(msg) {
    return connectMany(msg.n, msg.kind, msg.window || 200, msg.timeoutMs || 120000, msg.retries === undefined ? 5 : msg.retries);
  },
  async close() { return closeAll(); },
  async halt() { halted = true; return { alive }; },
  async mark() { markAt = nowMs(); maxGap.fill(0); beats.fill(0); loopLagMaxMs = 0; return { markAt }; },
  async gaps() { return gaps(); },
  async watch(msg) {
    watchSeq = msg.seq; watchHist = new Map(); watchCount = 0; watchMax = 0;
    let n = 0;
    for (let i = 0; i < CAPACITY; i++) { const c = conns[i]; watched[i] = c && c.state === 2 ? 1 : 0; n += watched[i]; }
    return { seq: watchSeq, watched: n };
  },
  // Wait until every ready connection has seen `seq` (or the timeout); the latency bins.
  async collect(msg) {
    const t0 = Date.now();
    for (;;) {
      let missing = 0;
      for (let i = 0; i < CAPACITY; i++) { const c = conns[i]; if (watched[i] && c && c.state === 2 && gotSeq[i] !== msg.seq) missing++; }
      if (missing === 0 || Date.now() - t0 > (msg.timeoutMs || 30000)) {
        for (let i = 0; missing > 0 && i < CAPACITY; i++) {
          const c = conns[i];
          if (watched[i] && c && c.state === 2 && gotSeq[i] !== msg.seq) owedSeq[i] = msg.seq;
        }
        let stillOwed = 0;
        for (let i = 0; i < CAPACITY; i++) if (owedSeq[i] !== -1 && conns[i] && conns[i].state === 2) stillOwed++;
        return {
          seq: msg.seq, received: watchCount, missing, alive, maxMs: watchMax, hist: Object.fromEntries(watchHist),
          late: owed.late, lost: owed.lost, lateMaxMs: owed.lateMaxMs, stillOwed,
        };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  },
  async status() { return Object.assign({ alive, stats }, usage()); },
  async quit() { setTimeout(() => process.exit(0), 10); return { ok: true }; },
};

// connect and close run one after the other; the measurements (watch, collect, gaps,
// status) answer at once, also while connections are being opened.
const MEASURES = new Set(['watch', 'collect', 'gaps', 'status', 'mark', 'hello', 'halt']);
serveCommands(commands, {
  end: (code) => process.exit(code), maxLifetimeS: MAX_LIFETIME_S, log, immediate: MEASURES,
});
