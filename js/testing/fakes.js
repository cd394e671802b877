// Fakes for the tests of tidings.js: a clock, WebSocket, fetch (with real Response and
// ReadableStream bodies, so the client reads streams exactly as it does in a browser), storage
// and window. Kept out of test/ so that the test runner does not run it as a test file.

import { Tidings } from "../tidings.js";

/** Fake setTimeout/clearTimeout: time moves only when a test calls advance(). */
export class Clock {
  now = 0;
  timers = new Map();
  #next = 1;

  setTimeout = (fn, ms = 0) => {
    const id = this.#next++;
    this.timers.set(id, { fn, at: this.now + ms, ms });
    return id;
  };

  clearTimeout = (id) => {
    this.timers.delete(id);
  };

  /** The delays of the timers still pending, in the order they were set. */
  get delays() {
    return [...this.timers.values()].map((timer) => timer.ms);
  }

  /** Run every timer due within `ms`, in order, letting promises settle after each. */
  async advance(ms) {
    const end = this.now + ms;
    await settle();
    for (;;) {
      let due = null;
      for (const [id, timer] of this.timers)
        if (timer.at <= end && (!due || timer.at < due[1].at)) due = [id, timer];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
      await settle();
    }
    this.now = end;
  }
}

/** Let every pending promise callback and I/O-free stream step run. */
export async function settle() {
  for (let turn = 0; turn < 20; turn++) await new Promise((resolve) => setImmediate(resolve));
}

export function fakeWebSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.closed = false;
      sockets.push(this);
    }
    send(text) {
      if (this.closed) throw new Error("send on a closed fake socket");
      this.sent.push(JSON.parse(text));
    }
    close() {
      this.closed = true;
    }
    // the server's side
    open() {
      this.onopen?.({});
    }
    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }
    drop(code = 1006, reason = "") {
      this.onclose?.({ code, reason });
    }
    refuse() {
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: "" });
    }
  }
  return { WebSocket: FakeWebSocket, sockets };
}

const encoder = new TextEncoder();

export function fakeFetch() {
  const requests = [];
  const fetch = (url, init = {}) =>
    new Promise((resolve, reject) => {
      let stream = null;
      const request = {
        url: new URL(url),
        init,
        aborted: false,
        get path() {
          return this.url.pathname;
        },
        param(name) {
          return this.url.searchParams.get(name);
        },
        params(name) {
          return this.url.searchParams.getAll(name);
        },
        header(name) {
          return init.headers?.[name] ?? null;
        },
        respond(status, body = null, headers = {}) {
          const text = body == null ? null : JSON.stringify(body);
          resolve(new Response(text, { status, headers }));
        },
        /** Answer 200 with an event stream; returns {push(text or bytes), end()}. */
        stream(headers = { "Content-Type": "text/event-stream" }) {
          const body = new ReadableStream({ start: (controller) => (stream = controller) });
          resolve(new Response(body, { status: 200, headers }));
          return {
            push: (chunk) => stream.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : chunk),
            end: () => stream.close(),
          };
        },
        fail(message = "fetch failed") {
          reject(new TypeError(message));
        },
      };
      init.signal?.addEventListener("abort", () => {
        request.aborted = true;
        const error = new DOMException("aborted", "AbortError");
        reject(error);
        try {
          stream?.error(error);
        } catch {}
      });
      requests.push(request);
    });
  return { fetch, requests };
}

export function fakeStorage(initial = {}) {
  const data = { ...initial };
  return { data, getItem: (key) => data[key] ?? null, setItem: (key, value) => (data[key] = value) };
}

export function fakeWindow() {
  const window = new EventTarget();
  window.document = new EventTarget();
  window.document.visibilityState = "visible";
  return window;
}

export const BASE = "http://tidings.test";

/** A client wired to fakes, plus the fakes and a log of its state events. */
export function setup(options = {}) {
  const clock = new Clock();
  const { WebSocket, sockets } = fakeWebSockets();
  const { fetch, requests } = fakeFetch();
  const storage = fakeStorage();
  const window = fakeWindow();
  const client = new Tidings(options.url || BASE, {
    WebSocket,
    fetch,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    storage,
    window,
    ...options,
  });
  const events = [];
  for (const name of ["connecting", "connected", "disconnected"])
    client.on(name, (...args) => events.push([name, ...args]));
  return { client, clock, sockets, requests, storage, window, events };
}

/** Wait for `condition` while letting promises run; fail after a bounded number of turns. */
export async function until(condition, what = "condition") {
  for (let turn = 0; turn < 200; turn++) {
    if (condition()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Web Locks for several fake tabs of one browser: `manager(tab)` is a tab's navigator.locks;
 * `kill(tab)` is the tab going away, which releases its locks and forgets its requests.
 */
export class Locks {
  held = new Map(); // name -> the request holding it
  queue = [];

  manager(tab) {
    return {
      request: (name, options, callback) =>
        this.#request(tab, name, callback ? options : {}, callback || options),
    };
  }

  #request(tab, name, { signal }, callback) {
    return new Promise((resolve, reject) => {
      const request = { tab, name, callback, resolve, reject };
      const aborted = () => new DOMException("aborted", "AbortError");
      if (signal?.aborted) return reject(aborted());
      signal?.addEventListener("abort", () => {
        const index = this.queue.indexOf(request);
        if (index >= 0) this.queue.splice(index, 1), reject(aborted());
      });
      this.queue.push(request);
      this.#grant();
    });
  }

  #grant() {
    for (const request of [...this.queue]) {
      if (this.held.has(request.name)) continue;
      this.queue.splice(this.queue.indexOf(request), 1);
      this.held.set(request.name, request);
      setImmediate(async () => {
        if (this.held.get(request.name) !== request) return; // its tab went away meanwhile
        let result, error;
        try { result = await request.callback({ name: request.name }); } catch (e) { error = e; }
        if (this.held.get(request.name) !== request) return; // its tab is gone
        this.held.delete(request.name);
        this.#grant();
        if (error) request.reject(error);
        else request.resolve(result);
      });
    }
  }

  kill(tab) {
    this.queue = this.queue.filter((request) => request.tab !== tab);
    for (const [name, request] of this.held) if (request.tab === tab) this.held.delete(name);
    this.#grant();
  }
}

/** A fake window of one tab sharing `locks` (and Node's BroadcastChannel) with other tabs. */
export function tabWindow(locks) {
  const window = fakeWindow();
  const channels = [];
  window.navigator = { locks: locks.manager(window) };
  window.BroadcastChannel = class extends BroadcastChannel {
    constructor(name) {
      super(name);
      channels.push(this);
    }
  };
  /** The tab goes away: it hears nothing more and its locks pass on. */
  window.kill = () => {
    for (const channel of channels) channel.close();
    locks.kill(window);
  };
  return window;
}
