// tidings.js: the browser client of Tidings, wire protocol version 1 (docs/protocol.md).
//
// One connection per Tidings instance, over the first technique of the ladder that works:
// WebSocket, then Server-Sent Events, then long polling, then short polling. Every technique
// resumes each channel from its last cursor after any reconnect, and offsets already seen are
// dropped, so events are neither lost nor delivered twice. With `share`, the tabs of a browser
// share one connection, held by a SharedWorker running this same file or by the tab that holds
// a Web Lock. No dependencies, no build step; everything that touches the outside world
// (sockets, fetch, timers, randomness, storage, the window) can be passed in, which is how the
// tests drive it.

const LADDER = ["websocket", "sse", "long_poll", "poll"];
const CHANNEL = /^[\w\-.:@/]{1,128}$/;
const CURSOR = /^[A-Za-z\d]{1,16}\.(0|[1-9]\d*)$/;
const CATCH_UP = 1000; // events per history request when a shared tab catches up
const DEFAULTS = {
  minDelay: 500, // first reconnect delay bound, doubling on each attempt...
  maxDelay: 30000, // ...up to this; the delay is uniform in [0, bound) ("full jitter")
  firstByteTimeout: 4000, // an event stream silent this long after the request is buffered
  openTimeout: 10000, // a WebSocket handshake or poll answer later than this has failed
  heartbeatTimeout: 35000, // an event stream silent this long (the server pings every 15 s) is dead
  pingInterval: 20000, // WebSocket: send an app-level ping this often...
  pongTimeout: 10000, // ...and give up on the socket when nothing answers it this soon
  pollTimeout: 25, // seconds the server may hold a long poll
  interval: 2000, // short polling period
  drainWindow: 10000, // close 1001/1012: come back at a random moment within this window
  tokenRetries: 3, // renewed tokens refused in a row before the client stops with an error
};

const memory = new Map();
const memoryStorage = {
  getItem: (key) => memory.get(key) ?? null,
  setItem: (key, value) => memory.set(key, value),
};

/** An error answered by the server (`code` as in docs/protocol.md section 8) or by this client. */
export class TidingsError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "TidingsError";
    this.code = code;
  }
}

/** `<epoch>.<offset>` as [epoch, offset]. */
const splitCursor = (id) => {
  const dot = id.indexOf(".");
  return [id.slice(0, dot), +id.slice(dot + 1)];
};

// What to do after a failed HTTP answer: get a new token, retry the same technique later,
// give up the forbidden channels, or stop (a 4xx will not get better by asking again).
async function httpFailure(response) {
  const { status } = response;
  let error = {};
  try { error = (await response.json()).error || {}; } catch {}
  const retryAfter = +response.headers.get("Retry-After") * 1000 || 0;
  error = new TidingsError(error.code || "http_" + status, `${status} ${error.message || ""}`.trim());
  error.how =
    status === 401
      ? { token: true, error }
      : status === 408 || status === 429 || status >= 500
        ? { stay: true, atLeast: retryAfter }
        : status === 403
          ? { forbidden: true, error }
          : { fatal: true, error };
  return error;
}

export class Tidings {
  /**
   * @param {string} url the server, `http(s)://host:port` or a base path of this page's origin
   * @param {object} [options] `token` (a string, or a function returning one or a Promise of
   *   one, asked at connect and after a 401 or close 4001), `transports`, the timings of DEFAULTS,
   *   `share` (one connection for every tab), `resume: "session"` (a reload resumes from the
   *   cursors of the page before), `worker` (the URL of this file, for SharedWorker), and the
   *   seams `WebSocket`, `fetch`, `setTimeout`, `clearTimeout`, `random`, `storage`, `window`
   */
  constructor(url, options = {}) {
    const o = (this._o = { ...DEFAULTS, ...options });
    const { setTimeout: set = setTimeout, clearTimeout: clear = clearTimeout } = o;
    const fetcher = o.fetch || globalThis.fetch;
    // Called as plain functions: browsers refuse window.setTimeout or fetch with another `this`.
    this._set = (fn, ms) => set(fn, ms);
    this._clear = (id) => clear(id);
    this._fetch = (target, init) => fetcher(target, init);
    this._random = o.random || Math.random;
    this._w = o.window || globalThis;
    this._base = String(url).replace(/\/+$/, "");
    this._ladder = [...(o.transports || LADDER)];
    for (const name of this._ladder)
      if (!TRANSPORTS[name]) throw new TypeError(`unknown transport ${name}: use ${LADDER}`);
    if (!this._ladder.length) throw new TypeError("transports is empty");
    const location = this._w.location;
    // If-None-Match is not a CORS-safelisted header: only send it where no preflight happens.
    this._sameOrigin = !location || this._url("", {}).origin === location.origin;
    // A function is asked for the first token at connect; `getToken` is its older spelling.
    const { token } = o;
    this._getToken = typeof token === "function" ? token : o.getToken;
    this._token = typeof token === "function" ? null : token;
    this._ask = typeof token === "function";
    this._channels = new Map(); // name -> {channel, cursor, subs}
    this._listeners = {};
    this._pending = new Map(); // publish ref -> [resolve, reject]
    this._worked = new Set(); // techniques that opened during this instance's life
    this._ref = this._attempt = this._fails = this._refused = 0;
    this._conn = this._timer = null;
    this._state = "disconnected";
    let storage = o.storage;
    // A sandboxed frame throws just for looking at sessionStorage.
    if (storage === undefined) try { storage = globalThis.sessionStorage; } catch {}
    this._storage = storage || memoryStorage;
    this._key = "tidings:" + this._base;
    let remembered;
    try { remembered = this._storage.getItem(this._key); } catch {}
    this._rung = Math.max(0, this._ladder.indexOf(remembered));
    // Sharing needs Web Locks, to know when a tab or the leading tab is gone; a SharedWorker
    // holds the connection where there is one, else the tab holding the lock (Android Chrome).
    const { navigator: nav, SharedWorker, BroadcastChannel } = this._w;
    if (o.share && nav?.locks) this._share = SharedWorker ? "worker" : BroadcastChannel && "locks";
    this._saved = {};
    if (o.resume === "session") {
      try { this._saved = JSON.parse(this._storage.getItem(this._key + " cursors")) || {}; } catch {}
      this._save = () => {
        const cursors = { ...this._saved };
        for (const [channel, entry] of this._channels) if (entry.cursor) cursors[channel] = entry.cursor;
        try { this._storage.setItem(this._key + " cursors", JSON.stringify(cursors)); } catch {}
      };
      this._w.addEventListener?.("pagehide", this._save);
    }
    this._wake = () => {
      if (this._closed) return;
      if (this._w.document?.visibilityState === "hidden") return this._save?.();
      if (this._timer == null) return this._conn?.check?.();
      this._clear(this._timer);
      this._connect();
    };
    this._w.addEventListener?.("online", this._wake);
    this._w.document?.addEventListener?.("visibilitychange", this._wake);
    this._kick();
  }

  /** The technique in use or being tried: "websocket", "sse", "long_poll", "poll" or null. */
  get transport() {
    return this._conn?.name ?? null;
  }

  /** "connecting", "connected", "disconnected" or "closed". */
  get state() {
    return this._state;
  }

  /**
   * Listen to "connecting" (name), "connected" (name), "disconnected" (reason, retry delay or
   * null) and "error" (a TidingsError that stopped the client, such as a token refused for good).
   */
  on(name, fn) {
    (this._listeners[name] ||= new Set()).add(fn);
    return () => this._listeners[name].delete(fn);
  }

  /**
   * Receive the events of `channel` after `since` (default: from now). `onEvent` gets
   * `{channel, id, event, data, ts}`; `onReset` gets `{channel, id, reason}` when history could
   * not cover a gap; `onError` gets a TidingsError when the server refuses the channel.
   * `since` only counts for the first subscription of a channel; with `resume: "session"`, it
   * defaults to the cursor the channel had when this page's previous incarnation went away.
   * Without a cursor, `rewind: N` starts with the channel's last N events (at most the server's
   * `server.max_rewind`). When the server ends the channel (POST /api/unsubscribe), `onError`
   * gets a TidingsError `unsubscribed` and the channel is not subscribed again. Where the
   * channel's namespace has presence, `onPresence` gets `{op: "join" | "leave", channel,
   * client: {sub, info}}` over a WebSocket (not with `share`).
   */
  subscribe(channel, { since, rewind, onEvent, onReset, onError, onPresence } = {}) {
    if (this._closed) throw new TidingsError("closed", "this Tidings instance is closed");
    if (!CHANNEL.test(channel)) throw new TypeError(`invalid channel name: ${channel}`);
    if (since != null && !CURSOR.test(since)) throw new TypeError(`invalid cursor: ${since}`);
    if (rewind != null && !(Number.isInteger(rewind) && rewind >= 0))
      throw new TypeError(`rewind must be a whole number, 0 or more: ${rewind}`);
    const saved = this._saved[channel];
    since ??= CURSOR.test(saved) ? saved : null;
    let entry = this._channels.get(channel);
    if (!entry) {
      entry = { channel, cursor: since || null, rewind: rewind || 0, subs: new Set() };
      this._channels.set(channel, entry);
      this._kick();
    }
    const sub = { onEvent, onReset, onError, onPresence };
    entry.subs.add(sub);
    return {
      channel,
      get cursor() { return entry.cursor; },
      close: () => {
        entry.subs.delete(sub);
        if (!entry.subs.size && this._channels.get(channel) === entry) {
          this._channels.delete(channel);
          this._kick();
        }
      },
    };
  }

  /** Publish over the WebSocket; resolves with the event's cursor. */
  publish(channel, data, { event, idempotencyKey } = {}) {
    const message = { op: "publish", channel, data, event, idempotency_key: idempotencyKey };
    return this._request(message, "publish");
  }

  /** Who is in `channel` now, over the WebSocket: resolves with `[{sub, info}, ...]`. */
  presence(channel) {
    if (this._share)
      return Promise.reject(new TidingsError("not_connected", "presence needs share: false"));
    return this._request({ op: "presence", channel }, "presence");
  }

  _request(message, what) {
    return new Promise((resolve, reject) => {
      const ref = ++this._ref;
      this._pending.set(ref, [resolve, reject]);
      if (!this._conn?.send?.({ ...message, ref })) {
        this._pending.delete(ref);
        const now = this._state === "connected" ? "connected over " + this.transport : this._state;
        reject(new TidingsError("not_connected", `${what} needs a WebSocket connection (${now})`));
      }
    });
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._clear(this._timer);
    this._timer = null;
    this._w.removeEventListener?.("online", this._wake);
    this._w.removeEventListener?.("pagehide", this._save);
    this._w.document?.removeEventListener?.("visibilitychange", this._wake);
    this._conn?.stop();
    this._conn = null;
    this._rejectPending("closed");
    const was = this._state;
    this._state = "closed";
    if (was === "connected") this._emit("disconnected", "closed", null);
  }

  // --- connection life ---------------------------------------------------------------------

  // Batch the subscriptions made in one turn into one change of the connection.
  _kick() {
    if (this._kicked) return;
    this._kicked = true;
    queueMicrotask(() => {
      this._kicked = false;
      if (this._conn) this._conn.sync();
      else if (this._timer == null) this._connect();
    });
  }

  _connect() {
    this._timer = null;
    const name = this._ladder[this._rung];
    if (this._closed || this._conn || this._asking || (name !== "websocket" && !this._channels.size))
      return;
    if (this._share) return (this._conn = shared(this)).sync();
    if (this._ask) return this._renew();
    let opened = false;
    const live = () => this._conn === conn;
    const ctx = {
      live,
      get open() { return opened; },
      opened: () => {
        if (live() && !opened) {
          opened = true;
          this._opened(name);
        }
      },
      failed: (reason, how = {}) => {
        if (!live()) return;
        this._conn = null;
        conn.stop();
        this._lost(name, opened, reason, how);
      },
    };
    const conn = (this._conn = { name, ...TRANSPORTS[name](this, ctx) });
    this._state = "connecting";
    this._emit("connecting", name);
    conn.sync();
  }

  // Ask for a token, then connect. A failing function leaves the old token, which the server
  // refuses again, which asks again: the refusals count towards tokenRetries either way.
  async _renew() {
    this._asking = true;
    this._ask = false;
    try { this._token = await this._getToken(); } catch {}
    this._asking = false;
    this._connect();
  }

  _opened(name) {
    this._attempt = this._fails = this._refused = 0;
    this._worked.add(name);
    try { this._storage.setItem(this._key, name); } catch {}
    this._state = "connected";
    this._emit("connected", name);
  }

  // A connection ended, or never opened: decide where and when to try next.
  _lost(name, opened, reason, how) {
    this._rejectPending(reason);
    let delay = null;
    if (how.forbidden) {
      // Which channel of the request? The ones that never worked on this token (usually the
      // one just added); the others go on without them.
      const entries = [...this._channels.values()];
      const suspects = entries.filter((entry) => !entry.ok);
      for (const entry of suspects.length ? suspects : entries) this._drop(entry.channel, how.error);
      if (this._channels.size) delay = this._backoff();
    } else if (how.token && this._getToken && this._refused++ < this._o.tokenRetries) {
      delay = this._backoff();
      this._ask = true;
      // The same token also failed the WebSocket handshake, which looked like a block.
      if (name !== "websocket") this._rung = 0;
    } else if (how.fatal || how.token) {
      // stays down until the subscriptions change
    } else if (opened || how.stay || (this._worked.has(name) && ++this._fails < 3)) {
      // It works here (the server may just be restarting): same technique, later.
      delay = how.delay ?? Math.max(how.atLeast || 0, this._backoff());
    } else if (++this._rung < this._ladder.length) {
      delay = 0; // cannot open here: next technique down, at once
    } else {
      this._rung = 0; // nothing opened: start the ladder again, later
      delay = this._backoff();
    }
    const was = this._state;
    this._state = "disconnected";
    if (was === "connected" || delay == null) this._emit("disconnected", reason, delay);
    if (delay != null) this._timer = this._set(() => this._connect(), delay);
    else if (how.token || how.fatal)
      this._emit("error", how.error || new TidingsError("unauthorized", reason));
  }

  _backoff() {
    const { minDelay, maxDelay } = this._o;
    return this._random() * Math.min(maxDelay, minDelay * 2 ** this._attempt++);
  }

  _rejectPending(reason) {
    for (const [, reject] of this._pending.values())
      reject(new TidingsError("disconnected", `disconnected before an answer: ${reason}`));
    this._pending.clear();
  }

  _emit(name, ...args) {
    for (const fn of this._listeners[name] || []) this._call(fn, ...args);
  }

  // An application callback that throws must not break delivery: report it on its own.
  _call(fn, ...args) {
    try {
      fn?.(...args);
    } catch (error) {
      if (this._w.reportError) this._w.reportError(error);
      else queueMicrotask(() => { throw error; });
    }
  }

  // --- what every transport reports ---------------------------------------------------------

  _deliver({ channel, id, event, data, ts }) {
    const entry = this._channels.get(channel);
    if (!entry) return;
    if (entry.cursor) {
      const [epoch, offset] = splitCursor(entry.cursor);
      const [newEpoch, newOffset] = splitCursor(id);
      if (epoch === newEpoch && newOffset <= offset) return; // seen already
    }
    entry.cursor = id;
    for (const sub of [...entry.subs]) this._call(sub.onEvent, { channel, id, event, data, ts });
  }

  _reset({ channel, id, reason }) {
    const entry = this._channels.get(channel);
    // Already there: the same reset, from history and then live (a shared tab catching up).
    if (!entry || entry.cursor === id) return;
    entry.cursor = id;
    for (const sub of [...entry.subs]) this._call(sub.onReset, { channel, id, reason });
  }

  // A cursor list from the server, one cursor per entry of the request, in its order: the
  // server accepted these channels (`ok`: not a suspect when a 403 comes). `_moved` is how the
  // owner of a shared connection learns where each channel starts.
  _follow(entries, list) {
    list.split(",").forEach((id, index) => entries[index] && Object.assign(entries[index], { cursor: id, ok: true }));
    this._moved?.();
  }

  _drop(channel, error) {
    const entry = this._channels.get(channel);
    if (!entry) return;
    this._channels.delete(channel);
    for (const sub of entry.subs) this._call(sub.onError, error);
  }

  _presence({ op, channel, client }) {
    const entry = this._channels.get(channel);
    if (!entry) return;
    for (const sub of [...entry.subs]) this._call(sub.onPresence, { op, channel, client });
  }

  _settle(ref, id, error) {
    const pending = this._pending.get(ref);
    if (!pending) return;
    this._pending.delete(ref);
    if (error) pending[1](error);
    else pending[0](id);
  }

  // --- HTTP ------------------------------------------------------------------------------------

  _url(path, params) {
    const url = new URL(this._base + path, this._w.location?.href);
    for (const [name, value] of Object.entries(params))
      for (const item of [].concat(value)) if (item != null) url.searchParams.append(name, item);
    return url;
  }

  _get(path, params, signal, headers = {}) {
    // A header, not ?token=, which would land in every access log on the way. Cross-origin it
    // costs a preflight (cached per URL, so once per poll with a new since=).
    if (this._token) headers.Authorization = "Bearer " + this._token;
    return this._fetch(this._url(path, params), { headers, signal, cache: "no-store" });
  }

  // The cursor list resuming `entries`, or null to start them all from now. A list needs one
  // cursor per channel, so channels that have none yet (new ones) get their current one first,
  // by a short poll; one that asks for `rewind` gets its last events from that poll too.
  async _since(entries, signal) {
    const missing = entries.filter((entry) => !entry.cursor);
    if (missing.length === entries.length && !missing.some((entry) => entry.rewind)) return null;
    for (const rewind of new Set(missing.map((entry) => entry.rewind))) {
      const group = missing.filter((entry) => entry.rewind === rewind);
      const channel = group.map((entry) => entry.channel);
      const params = { channel, rewind: rewind || undefined, limit: rewind ? CATCH_UP : undefined };
      const response = await this._get("/poll", params, signal);
      if (!response.ok) throw await httpFailure(response);
      const body = await response.json();
      for (const event of body.events || []) this._deliver(event);
      this._follow(group, body.cursor);
    }
    return entries.map((entry) => entry.cursor).join(",");
  }

  // The server ended `channel` for this user (POST /api/unsubscribe): tell the application and
  // never subscribe to it again on our own.
  _unsubscribed(channel) {
    const error = new TidingsError("unsubscribed", `the server ended the subscription to ${channel}`);
    this._drop(channel, error);
  }
}

// --- transports: (client, ctx) => {sync, stop, send?, check?} ----------------------------------
// sync() opens the connection, then makes it follow the client's set of channels; stop() ends
// it quietly. A transport reports through ctx: opened() once it has proved that it delivers,
// failed(reason, how) when it is over.

function websocket(client, ctx) {
  const o = client._o;
  const subscribed = new Set();
  const subscribing = new Map(); // ref -> channel
  let socket, timer, awaitingPong;
  const send = (message) => socket.send(JSON.stringify(message));
  const fail = (reason, how) => ctx.failed(reason, how);
  // The server's protocol-level pings are answered by the browser unseen, so this side checks
  // the connection itself, with pings it can see answered.
  const ping = () => {
    send({ op: "ping" });
    awaitingPong = true;
    client._clear(timer);
    timer = client._set(() => fail("no answer to ping"), o.pongTimeout);
  };
  const alive = () => {
    awaitingPong = false;
    client._clear(timer);
    timer = client._set(ping, o.pingInterval);
  };
  const receive = (message) => {
    const { op, ref, channel } = message;
    if (op === "event") client._deliver(message);
    else if (op === "reset") client._reset(message);
    else if (op === "subscribed") {
      subscribing.delete(ref);
      const entry = client._channels.get(channel);
      if (entry && !entry.cursor) client._follow([entry], message.id);
    } else if (op === "unsubscribed" && message.reason === "server") {
      subscribed.delete(channel);
      client._unsubscribed(channel);
    } else if (op === "published") client._settle(ref, message.id);
    else if (op === "presence") client._settle(ref, message.clients);
    else if (op === "join" || op === "leave") client._presence(message);
    else if (op === "error") {
      const error = new TidingsError(message.code, message.message);
      const refused = subscribing.get(ref);
      if (refused == null) return client._settle(ref, null, error);
      subscribing.delete(ref);
      subscribed.delete(refused);
      client._drop(refused, error);
    }
  };
  const open = () => {
    const url = client._url("/ws", { token: client._token });
    url.protocol = url.protocol.replace("http", "ws");
    try {
      socket = new (o.WebSocket || globalThis.WebSocket)(url.href);
    } catch (error) {
      return fail("WebSocket unavailable: " + error.message, {});
    }
    timer = client._set(() => fail("the WebSocket did not open"), o.openTimeout);
    socket.onopen = () => {
      ctx.opened();
      alive();
      sync();
    };
    socket.onmessage = (message) => {
      if (awaitingPong) alive();
      receive(JSON.parse(message.data));
    };
    socket.onerror = () => fail("WebSocket error", {});
    socket.onclose = ({ code, reason }) =>
      fail(
        `WebSocket closed with ${code}${reason ? ": " + reason : ""}`,
        code === 4001
          ? { token: true }
          : code === 1001 || code === 1012
            ? { delay: client._random() * o.drainWindow }
            : serverDisconnect(code, reason) || {},
      );
  };
  function sync() {
    if (!socket) return open();
    if (!ctx.open) return;
    for (const [channel, entry] of client._channels)
      if (!subscribed.has(channel)) {
        subscribed.add(channel);
        subscribing.set(++client._ref, channel);
        const rewind = entry.cursor ? undefined : entry.rewind || undefined;
        send({ op: "subscribe", channel, since: entry.cursor || undefined, rewind, ref: client._ref });
      }
    for (const channel of subscribed)
      if (!client._channels.has(channel)) {
        subscribed.delete(channel);
        send({ op: "unsubscribe", channel });
      }
  }
  return {
    sync,
    send: (message) => ctx.open && (send(message), true),
    check: () => ctx.open && !awaitingPong && ping(),
    stop() {
      client._clear(timer);
      if (!socket) return;
      socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
      try { socket.close(); } catch {}
    },
  };
}

// Server-Sent Events, read with fetch rather than EventSource: EventSource hides the bytes this
// client must see (the `retry:` line that proves a stream is not buffered, the `: ping`
// heartbeats, `retry:` itself) and reconnects on its own.
function sse(client, ctx) {
  const o = client._o;
  let generation = 0, abort, timer, retry = 0;
  const stop = () => {
    generation++;
    client._clear(timer);
    abort?.abort();
  };
  async function sync() {
    stop();
    const mine = generation;
    const entries = [...client._channels.values()];
    if (!entries.length) return;
    const { signal } = (abort = new AbortController());
    const current = () => mine === generation && ctx.live();
    // The server's retry: is the least delay before any reconnect, as in EventSource.
    const fail = (reason, how) => current() && ctx.failed(reason, how || { atLeast: retry });
    const watch = (ms, reason) => {
      client._clear(timer);
      timer = client._set(() => fail(reason), ms);
    };
    if (ctx.open) watch(o.heartbeatTimeout, "no heartbeat on the event stream");
    else watch(o.firstByteTimeout, `nothing on the event stream after ${o.firstByteTimeout} ms`);
    try {
      const since = await client._since(entries, signal);
      const channel = entries.map((entry) => entry.channel);
      const response = await client._get("/sse", { channel, envelope: 1, since }, signal);
      if (!response.ok) throw await httpFailure(response);
      if (!/^text\/event-stream/i.test(response.headers.get("Content-Type")) || !response.body)
        throw new Error("not an event stream");
      const reader = response.body.getReader();
      const revoked = (how) => fail(how.error.message, how);
      const parse = eventStream(client, entries, (ms) => (retry = ms), revoked);
      for (;;) {
        const { done, value } = await reader.read();
        if (!current()) return;
        if (done) return fail("the event stream ended");
        watch(o.heartbeatTimeout, "no heartbeat on the event stream");
        ctx.opened();
        parse(value);
      }
    } catch (error) {
      fail(error.message, error.how);
    }
  }
  return { sync, stop };
}

// An incremental event-stream parser (WHATWG "parse an event stream", minus what Tidings never
// sends: bare CR line ends). Every `id:` is the stream's cursor list after its event.
function eventStream(client, entries, onRetry, onRevoked) {
  const decoder = new TextDecoder();
  let buffer = "", data = [], name = "", id = "";
  const dispatch = () => {
    if (data.length) {
      const body = JSON.parse(data.join("\n"));
      if (name === "tidings.reset") client._reset(body);
      else if (name === "tidings.unsubscribed") client._unsubscribed(body.channel);
      else if (name === "tidings.disconnect" && body.reconnect === false)
        onRevoked(serverDisconnect(4003, "disconnected by the server"));
      else if (!name.startsWith("tidings.")) client._deliver(body);
    }
    if (id) client._follow(entries, id); // after the event, whose offset it already counts
    data = [];
    name = id = "";
  };
  const field = (line) => {
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + (line[colon + 1] === " " ? 2 : 1));
    if (key === "data") data.push(value);
    else if (key === "event") name = value;
    else if (key === "id") id = value;
    else if (key === "retry" && /^\d+$/.test(value)) onRetry(+value);
  };
  return (bytes) => {
    const lines = (buffer + decoder.decode(bytes, { stream: true })).split("\n");
    buffer = lines.pop();
    for (let line of lines) {
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (!line) dispatch();
      else if (line[0] !== ":") field(line);
    }
  };
}

// Long polling holds each request up to pollTimeout seconds; short polling asks every interval,
// with If-None-Match so that nothing new costs a bodiless 304. Either way, the first request of
// a connection is answered at once, which proves the technique and learns the cursors.
function polling(long) {
  return (client, ctx) => {
    const o = client._o;
    let generation = 0, abort, timer, etag;
    const stop = () => {
      generation++;
      client._clear(timer);
      abort?.abort();
    };
    async function sync() {
      stop();
      const mine = generation;
      const entries = [...client._channels.values()];
      if (!entries.length) return;
      const { signal } = (abort = new AbortController());
      const current = () => mine === generation && ctx.live();
      const wait = long && ctx.open ? o.pollTimeout : 0;
      const limit = wait * 1000 + o.openTimeout;
      timer = client._set(() => current() && ctx.failed(`no answer to a poll in ${limit} ms`), limit);
      try {
        const since = await client._since(entries, signal);
        const headers = {};
        if (since && etag?.[1] && etag[0] === since && client._sameOrigin)
          headers["If-None-Match"] = etag[1];
        const channel = entries.map((entry) => entry.channel);
        const response = await client._get("/poll", { channel, since, timeout: wait }, signal, headers);
        if (response.status >= 400) throw await httpFailure(response);
        const body = response.status === 200 ? await response.json() : null;
        if (!current()) return;
        client._clear(timer);
        ctx.opened();
        for (const reset of body?.resets || []) client._reset(reset);
        for (const event of body?.events || []) client._deliver(event);
        for (const channel of body?.unsubscribed || []) client._unsubscribed(channel);
        const cursor = body?.cursor || response.headers.get("Tidings-Cursor");
        if (cursor) {
          client._follow(entries, cursor);
          etag = [cursor, response.headers.get("ETag")];
        }
        if (current()) timer = client._set(sync, long ? 0 : o.interval);
      } catch (error) {
        if (current()) ctx.failed(error.message, error.how);
      }
    }
    return { sync, stop };
  };
}

const TRANSPORTS = { websocket, sse, long_poll: polling(true), poll: polling(false) };

// POST /api/disconnect (docs/protocol.md section 7): WebSocket close 4002 asks us back at once;
// 4003 (an SSE stream's tidings.disconnect without reconnect) means the server refuses this
// user's token: stay down, with an `error` event `disconnected` for the application.
function serverDisconnect(code, reason) {
  if (code === 4002) return { delay: 0 };
  if (code === 4003) {
    const error = new TidingsError("disconnected", reason || "disconnected by the server");
    return { fatal: true, error };
  }
  return null;
}

// --- one connection for every tab ----------------------------------------------------------------
// Each tab's client keeps its own channels, cursors, callbacks and duplicate check, and talks to
// the owner of the connection over messages: to a SharedWorker through its port, or to the tab
// holding the lock `tidings <url>` over two BroadcastChannels (" up" to the owner, " down" from
// it). The owner runs one plain client on the union of the tabs' channels. A tab that joins with
// a cursor behind the owner's fills the gap from history itself, holding the owner's live events
// back meanwhile, so that a reload, or a new owner that resumed from another tab's cursor, loses
// nothing. Each tab holds the lock `tidings <url> tab <id>` while it lives: the owner waiting for
// that lock learns when a tab is gone.

const PICKED = ["transports", ...Object.keys(DEFAULTS)]; // the options a worker can be sent

// The channel state of a tab, in the owner: answers `send(tab, message)`, `fan(tabs, message)`;
// `watch(tab, gone)` calls `gone` when the tab has gone away.
function owner(link, make) {
  const tabs = new Map(); // tab -> {channels: Set, token: whether it can give one}
  const channels = new Map(); // channel -> {sub, tabs: Set, waiting: Set of tabs to answer}
  const asks = new Map(); // token request ref -> {resolve, reject, tab}
  let client, last, refs = 0;
  const everyone = (message) => link.fan(tabs.keys(), message);
  // A tab learns where the owner's stream of a channel starts once the owner knows it.
  const answer = () => {
    for (const [channel, { sub, waiting }] of channels)
      if (sub.cursor) {
        for (const tab of waiting) link.send(tab, { op: "subscribed", channel, id: sub.cursor });
        waiting.clear();
      }
  };
  // The owner's client asks a tab that has a token (a function cannot travel in a message).
  const ask = (ref) => {
    const pending = asks.get(ref);
    pending.tab = [...tabs].find(([, tab]) => tab.token)?.[0];
    if (pending.tab != null) return link.send(pending.tab, { op: "token", ref });
    asks.delete(ref);
    pending.reject();
  };
  const token = () =>
    new Promise((resolve, reject) => {
      const ref = ++refs;
      asks.set(ref, { resolve, reject });
      ask(ref);
    });
  const leave = (tab) => {
    const gone = tabs.get(tab);
    if (!gone) return;
    tabs.delete(tab);
    for (const channel of gone.channels) unfollow(tab, channel);
    for (const [ref, pending] of asks) if (pending.tab === tab) ask(ref);
    link.forget?.(tab);
    if (!tabs.size) stop();
  };
  const unfollow = (tab, channel) => {
    const state = channels.get(channel);
    tabs.get(tab)?.channels.delete(channel);
    if (!state?.tabs.delete(tab)) return;
    state.waiting.delete(tab);
    if (!state.tabs.size) {
      channels.delete(channel);
      state.sub.close();
    }
  };
  const follow = (channel, since) => {
    const state = { tabs: new Set(), waiting: new Set() };
    const fan = (message) => (link.fan(state.tabs, message), answer());
    state.sub = client.subscribe(channel, {
      since,
      onEvent: (event) => fan({ op: "event", ...event }),
      onReset: (reset) => fan({ op: "reset", ...reset }),
      onError: ({ code, message }) => {
        channels.delete(channel);
        for (const tab of state.tabs) tabs.get(tab)?.channels.delete(channel);
        link.fan(state.tabs, { op: "error", channel, code, message });
      },
    });
    channels.set(channel, state);
    return state;
  };
  const stop = () => {
    client?.close();
    client = last = null;
    channels.clear();
  };
  const ops = {
    hello({ tab, url, options, token: has }) {
      if (!tabs.has(tab)) {
        tabs.set(tab, { channels: new Set(), token: has });
        link.watch(tab, () => leave(tab));
      }
      if (!client) {
        client = make(url, { ...options, token: has ? token : undefined });
        client._moved = answer;
        for (const name of ["connecting", "connected", "disconnected"])
          client.on(name, (...args) => everyone((last = { op: "state", name, args })));
        client.on("error", ({ code, message }) => everyone({ op: "fail", code, message }));
      }
      link.send(tab, last || { op: "welcome" }); // a tab hears from its owner at once
    },
    subscribe({ tab, channel, since }) {
      const state = channels.get(channel) || follow(channel, since);
      tabs.get(tab).channels.add(channel);
      state.tabs.add(tab);
      state.waiting.add(tab);
      answer();
    },
    unsubscribe: ({ tab, channel }) => unfollow(tab, channel),
    publish({ tab, ref, channel, data, event, idempotency_key: idempotencyKey }) {
      client.publish(channel, data, { event, idempotencyKey }).then(
        (id) => link.send(tab, { op: "published", ref, id }),
        ({ code, message }) => link.send(tab, { op: "failed", ref, code, message }),
      );
    },
    bye: ({ tab }) => leave(tab),
  };
  return {
    stop,
    receive(message) {
      const { op, tab, ref } = message;
      if (op === "token") {
        const pending = asks.get(ref);
        asks.delete(ref);
        return message.failed ? pending?.reject() : pending?.resolve(message.token);
      }
      // A tab whose hello went to an owner that is gone says hello again when the next one
      // announces itself.
      if (op === "hello" || tabs.has(tab)) ops[op]?.(message);
    },
  };
}

const randomId = () => crypto.getRandomValues(new Uint32Array(2)).join("");

// The tab's side: a connection to the owner, with sync/send/stop like a transport.
function shared(client) {
  const o = client._o, w = client._w, locks = w.navigator.locks;
  const url = client._url("/", {}).href.replace(/\/$/, "");
  const name = "tidings " + url, tab = randomId();
  const registered = new Map(); // channel -> {waiting, buffer of live messages or null, overflow}
  const abort = new AbortController();
  const { signal } = abort;
  let post, release, ready, stopLink = () => {};
  const take = (message) => (message.op === "event" ? client._deliver(message) : client._reset(message));

  const hello = () =>
    post({
      op: "hello",
      url,
      token: !!(o.token || o.getToken),
      options: Object.fromEntries(PICKED.map((key) => [key, o[key]])),
    });
  const register = (channel) => {
    const { cursor } = client._channels.get(channel);
    registered.set(channel, { waiting: true, buffer: cursor ? [] : null });
    post({ op: "subscribe", channel, since: cursor || undefined });
  };
  function sync() {
    if (!ready) return;
    for (const channel of client._channels.keys()) if (!registered.has(channel)) register(channel);
    for (const channel of registered.keys())
      if (!client._channels.has(channel)) {
        registered.delete(channel);
        post({ op: "unsubscribe", channel });
      }
  }

  // Events after the tab's cursor up to the owner's (`id`) come from history; the owner's live
  // events, held back meanwhile, follow (the duplicate check drops what history already gave).
  async function catchUp(channel, state, id) {
    const entry = client._channels.get(channel);
    const current = () => entry && registered.get(channel) === state && client._channels.get(channel) === entry;
    if (!current()) return;
    const [epoch, offset] = splitCursor(id);
    const behind = () => {
      const [mine, at] = splitCursor(entry.cursor);
      return mine !== epoch || at < offset;
    };
    try {
      if (client._ask) {
        client._ask = false;
        try { client._token = await client._getToken(); } catch {}
      }
      for (let more = behind() || state.overflow; more; ) {
        state.overflow = false;
        const response = await client._get("/poll", { channel, since: entry.cursor, limit: CATCH_UP });
        if (!response.ok) throw await httpFailure(response);
        const { events, resets = [] } = await response.json();
        if (!current()) return;
        for (const reset of resets) client._reset(reset);
        for (const event of events) client._deliver(event);
        more = events.length >= CATCH_UP || state.overflow;
      }
    } catch ({ how = {} }) {
      if (!current()) return;
      // Refused for good: this channel only. A failed request or a token to renew: try again.
      if (how.forbidden || how.fatal || (how.token && !client._getToken))
        return client._drop(channel, how.error), sync();
      client._ask = !!how.token;
      return client._set(() => catchUp(channel, state, id), client._backoff());
    }
    client._attempt = 0;
    const { buffer } = state;
    state.buffer = null;
    buffer.forEach(take);
  }

  const receive = (message) => {
    if (client._closed) return;
    const { op, channel, ref, code } = message;
    const state = registered.get(channel);
    const error = () => new TidingsError(code, message.message);
    if (op === "owner") {
      // A new owner: it knows nothing of this tab yet, and what the old one had not answered
      // is lost.
      client._rejectPending("the shared connection moved");
      if (ready) {
        hello();
        for (const channel of registered.keys()) register(channel);
      }
    } else if (op === "state") {
      client._conn.name = message.name === "disconnected" ? null : message.args[0];
      client._state = message.name;
      client._emit(message.name, ...message.args);
    } else if (op === "fail") client._emit("error", error());
    else if (op === "subscribed") {
      const entry = client._channels.get(channel);
      if (entry && !entry.cursor) entry.cursor = message.id;
      if (!state?.waiting) return;
      state.waiting = false;
      if (state.buffer) catchUp(channel, state, message.id);
    } else if (op === "event" || op === "reset") {
      if (!state) return;
      if (!state.buffer) take(message);
      else if (state.buffer.length < CATCH_UP) state.buffer.push(message);
      else state.overflow = true; // history covers it: one more request before the live events
    } else if (op === "error") {
      if (!state) return;
      registered.delete(channel);
      client._drop(channel, error());
    } else if (op === "published") client._settle(ref, message.id);
    else if (op === "failed") client._settle(ref, null, error());
    else if (op === "token")
      Promise.resolve(client._getToken ? client._getToken() : client._token).then(
        (token) => post({ op, ref, token: (client._token = token) }),
        () => post({ op, ref, failed: true }),
      );
  };

  let worker, port;
  // A worker script must be of the page's origin and load as one: where it does not (another
  // origin, a bundle that moved this module), or the worker says nothing within openTimeout
  // (a browser may attach a tab to a worker that failed without telling it), the tabs elect a
  // leader instead.
  if (client._share === "worker")
    try { worker = new w.SharedWorker(o.worker || import.meta.url, { type: "module", name }); } catch {}
  if ((port = worker?.port)) {
    const fail = (worker.onerror = () => {
      if (client._conn?.stop !== stop) return;
      client._share = "locks";
      client._conn = null;
      stop();
      client._rejectPending("the shared worker failed");
      client._connect();
    });
    const silent = client._set(fail, o.openTimeout);
    port.onmessage = ({ data }) => {
      client._clear(silent);
      receive(data);
    };
    post = (message) => port.postMessage({ ...message, tab });
    stopLink = () => port.close();
  } else {
    const up = new w.BroadcastChannel(name + " up"), down = new w.BroadcastChannel(name + " down");
    down.onmessage = ({ data }) => (data.to == null || data.to === tab) && receive(data);
    post = (message) => up.postMessage({ ...message, tab });
    stopLink = () => (up.close(), down.close());
    // Waiting here is the line of succession: the lock passes on when its holder goes away.
    locks
      .request(name, { signal }, () => new Promise((resolve) => lead(client, name, signal, resolve)))
      .catch(() => {});
  }
  // Hold this tab's lock before saying anything, so the owner never takes it for gone. (A lock
  // granted just before the client closed still calls back: it is then given back at once.)
  locks
    .request(name + " tab " + tab, { signal }, () => {
      if (signal.aborted) return;
      ready = true;
      hello();
      sync();
      return new Promise((resolve) => (release = resolve));
    })
    .catch(() => {});

  function stop() {
    if (ready) post({ op: "bye" });
    abort.abort();
    release?.();
    stopLink();
  }
  return { name: null, sync, stop, send: (message) => ready && (post(message), true) };
}

// The tab holding the lock owns the connection until it goes away or its client closes.
function lead(client, name, signal, resign) {
  if (signal.aborted) return resign();
  const w = client._w;
  const up = new w.BroadcastChannel(name + " up"), down = new w.BroadcastChannel(name + " down");
  const hub = owner(
    {
      send: (tab, message) => down.postMessage({ ...message, to: tab }),
      fan: (tabs, message) => down.postMessage(message), // each tab keeps its own channels
      watch: (tab, gone) => w.navigator.locks.request(name + " tab " + tab, { signal }, gone).catch(() => {}),
    },
    (url, options) => new Tidings(url, { ...client._o, ...options, share: false, resume: null }),
  );
  up.onmessage = ({ data }) => hub.receive(data);
  signal.addEventListener("abort", () => {
    hub.stop();
    up.close();
    down.close();
    resign();
  });
  down.postMessage({ op: "owner" });
}

// Loaded as a SharedWorker (by `share` above): own the connection for the tabs that connect.
if (globalThis.SharedWorkerGlobalScope && globalThis instanceof SharedWorkerGlobalScope) {
  const ports = new Map(); // tab -> port
  const send = (tab, message) => ports.get(tab)?.postMessage(message);
  const hub = owner(
    {
      send,
      fan: (tabs, message) => { for (const tab of tabs) send(tab, message); },
      watch: (tab, gone) => navigator.locks.request(`${globalThis.name} tab ${tab}`, gone),
      forget: (tab) => ports.delete(tab),
    },
    (url, options) => new Tidings(url, options),
  );
  globalThis.onconnect = ({ ports: [port] }) => {
    port.onmessage = ({ data }) => {
      ports.set(data.tab, port);
      hub.receive(data);
    };
  };
}
