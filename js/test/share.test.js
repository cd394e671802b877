// `share`: tabs of one browser over one connection, with the leader election of BroadcastChannel
// and Web Locks (the fake tabs have no SharedWorker), handover, catching up, and `resume`.

import assert from "node:assert/strict";
import test from "node:test";

import { Tidings } from "../tidings.js";
import {
  Clock,
  Locks,
  fakeFetch,
  fakeStorage,
  fakeWebSockets,
  setup,
  tabWindow,
  until,
} from "../testing/fakes.js";

const event = (channel, id, data = id) => ({ op: "event", channel, id, event: "message", data, ts: 1 });
let browsers = 0;

/** One browser: tabs sharing locks and BroadcastChannels, and one fake server behind them. */
function browser(t) {
  const locks = new Locks();
  const base = `http://tidings.test/b${++browsers}`; // BroadcastChannel names are process-wide
  const { WebSocket, sockets } = fakeWebSockets();
  const { fetch, requests } = fakeFetch();
  const tabs = [];
  t.after(() => tabs.forEach((tab) => tab.close()));
  const open = (options = {}, dress = () => {}) => {
    const clock = new Clock();
    const window = tabWindow(locks);
    dress(window);
    const storage = fakeStorage(options.saved);
    const client = new Tidings(base, {
      share: true,
      WebSocket,
      fetch,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      random: () => 0.5,
      storage,
      window,
      ...options,
    });
    const seen = [];
    const tab = {
      client,
      clock,
      seen,
      follow: (channel, extra) =>
        client.subscribe(channel, {
          onEvent: ({ id }) => seen.push(id),
          onReset: ({ id }) => seen.push(["reset", id]),
          ...extra,
        }),
      close: () => (tab.killed || client.close(), window.kill()),
      kill: () => ((tab.killed = true), window.kill()),
    };
    tabs.push(tab);
    return tab;
  };
  return { open, sockets, requests, base, key: `tidings:${base} cursors` };
}

const sent = (socket) => socket.sent.map(({ op, channel, since }) => [op, channel, since]);

test("tabs share one WebSocket; each keeps its own subscriptions and callbacks", async (t) => {
  const { open, sockets } = browser(t);
  const one = open();
  const news = one.follow("news");
  await until(() => sockets.length === 1, "the leader's socket");
  sockets[0].open();
  await until(() => sockets[0].sent.length === 1, "subscribe");
  sockets[0].receive({ op: "subscribed", ref: sockets[0].sent[0].ref, channel: "news", id: "e1.5" });
  await until(() => news.cursor === "e1.5", "the first tab's cursor");
  const two = open();
  const states = [];
  two.client.on("connected", (name) => states.push(name));
  const twoNews = two.follow("news");
  two.follow("sport");
  await until(() => twoNews.cursor === "e1.5" && sockets[0].sent.length === 2, "the second tab");
  assert.deepEqual(states, ["websocket"]);
  assert.equal(two.client.transport, "websocket");
  sockets[0].receive(event("news", "e1.6"));
  sockets[0].receive(event("sport", "s1.1"));
  await until(() => one.seen.length === 1 && two.seen.length === 2, "the events");
  assert.deepEqual(one.seen, ["e1.6"]);
  assert.deepEqual(two.seen, ["e1.6", "s1.1"]);
  two.close();
  await until(() => sockets[0].sent.length === 3, "unsubscribe");
  assert.deepEqual(sent(sockets[0]), [
    ["subscribe", "news", undefined],
    ["subscribe", "sport", undefined],
    ["unsubscribe", "sport", undefined],
  ]);
  assert.equal(sockets.length, 1);
});

test("the leader goes away: the next tab takes over and resumes from its cursor", async (t) => {
  const { open, sockets } = browser(t);
  const leader = open();
  leader.follow("news");
  await until(() => sockets.length === 1, "the leader's socket");
  sockets[0].open();
  const other = open();
  const sub = other.follow("news");
  await until(() => sockets[0].sent.length === 1, "subscribe");
  sockets[0].receive({ op: "subscribed", ref: sockets[0].sent[0].ref, channel: "news", id: "e1.5" });
  await until(() => sub.cursor === "e1.5", "the other tab's subscription");
  sockets[0].receive(event("news", "e1.6"));
  sockets[0].receive(event("news", "e1.7"));
  await until(() => other.seen.length === 2, "the events before");
  leader.kill();
  await until(() => sockets.length === 2, "the new leader's socket");
  sockets[1].open();
  await until(() => sockets[1].sent.length === 1, "subscribe on the new socket");
  assert.deepEqual(sent(sockets[1]), [["subscribe", "news", "e1.7"]]);
  const { ref } = sockets[1].sent[0];
  sockets[1].receive({ op: "subscribed", ref, channel: "news", id: "e1.7", recovered: true });
  sockets[1].receive(event("news", "e1.7")); // a repeat must not reach the page
  sockets[1].receive(event("news", "e1.8"));
  await until(() => other.seen.length === 3, "the events after");
  assert.deepEqual(other.seen, ["e1.6", "e1.7", "e1.8"]);
});

test("a tab behind the shared connection catches up from history, then goes live", async (t) => {
  const { open, sockets, requests, key } = browser(t);
  const live = open();
  live.follow("news", { since: "e1.2" });
  await until(() => sockets.length === 1, "the socket");
  sockets[0].open();
  await until(() => sockets[0].sent.length === 1, "subscribe");
  assert.deepEqual(sent(sockets[0]), [["subscribe", "news", "e1.2"]]);
  for (const id of ["e1.3", "e1.4", "e1.5"]) sockets[0].receive(event("news", id));
  await until(() => live.seen.length === 3, "the live tab's events");
  // a reloaded tab: resume: "session" starts it from the cursor its page had
  const reloaded = open({ resume: "session", saved: { [key]: '{"news":"e1.3"}' } });
  const sub = reloaded.follow("news");
  assert.equal(sub.cursor, "e1.3");
  await until(() => requests.length === 1, "the history request");
  const [history] = requests;
  assert.equal(history.path, "/b" + browsers + "/poll");
  assert.deepEqual([history.param("channel"), history.param("since")], ["news", "e1.3"]);
  assert.equal(history.param("limit"), "1000");
  sockets[0].receive(event("news", "e1.6")); // live, while history is on its way: held back
  await until(() => live.seen.length === 4, "the live event");
  assert.deepEqual(reloaded.seen, []);
  history.respond(200, {
    events: ["e1.4", "e1.5", "e1.6"].map((id) => event("news", id)),
    cursor: "e1.6",
  });
  await until(() => reloaded.seen.length === 3, "history");
  sockets[0].receive(event("news", "e1.7"));
  await until(() => reloaded.seen.length === 4, "the next live event");
  assert.deepEqual(reloaded.seen, ["e1.4", "e1.5", "e1.6", "e1.7"]);
  assert.equal(sockets.length, 1);
});

test("publish goes through the tab that holds the connection", async (t) => {
  const { open, sockets } = browser(t);
  open();
  const other = open();
  await until(() => sockets.length === 1, "the socket");
  sockets[0].open();
  await until(() => other.client.state === "connected", "the other tab connected");
  const answer = other.client.publish("news", { text: "hi" }, { idempotencyKey: "k1" });
  await until(() => sockets[0].sent.length === 1, "the publish on the socket");
  const [message] = sockets[0].sent;
  assert.deepEqual([message.op, message.channel, message.data, message.idempotency_key], [
    "publish",
    "news",
    { text: "hi" },
    "k1",
  ]);
  sockets[0].receive({ op: "published", ref: message.ref, channel: "news", id: "e1.1" });
  assert.equal(await answer, "e1.1");
});

test("the connection asks a tab's token function for its token", async (t) => {
  const { open, sockets } = browser(t);
  let asked = 0;
  const tab = open({ token: async () => `t${++asked}` });
  await until(() => sockets.length === 1, "the socket");
  assert.equal(sockets[0].url.searchParams.get("token"), "t1");
  sockets[0].drop(4001);
  await tab.clock.advance(1000); // the backoff, on the clock of the tab holding the connection
  await until(() => sockets.length === 2, "a socket with a new token");
  assert.equal(sockets[1].url.searchParams.get("token"), "t2");
});

test("without Web Locks, share falls back to a connection per tab", async () => {
  const { client, sockets } = setup({ share: true });
  client.subscribe("news");
  await until(() => sockets.length === 1, "the tab's own socket");
  client.close();
});

test("resume: session saves the cursors when the page goes away and resumes from them", async () => {
  const { client, sockets, storage, window } = setup({ resume: "session" });
  client.subscribe("news");
  await until(() => sockets.length === 1, "the socket");
  sockets[0].open();
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "news", id: "e1.5" });
  sockets[0].receive(event("news", "e1.6"));
  window.dispatchEvent(new Event("pagehide"));
  client.close();
  assert.deepEqual(JSON.parse(storage.data["tidings:http://tidings.test cursors"]), { news: "e1.6" });
  const { client: next, sockets: nextSockets } = setup({ resume: "session", storage });
  assert.equal(next.subscribe("news").cursor, "e1.6");
  assert.equal(next.subscribe("other").cursor, null);
  next.close();
  const { client: fresh } = setup({ storage });
  assert.equal(fresh.subscribe("news").cursor, null); // without resume: from now
  fresh.close();
  assert.equal(nextSockets.length, 0);
});

test("a reset both in history and live reaches a catching-up tab once", async (t) => {
  const { open, sockets, requests, key } = browser(t);
  const live = open();
  live.follow("news", { since: "e1.5" });
  await until(() => sockets.length === 1, "the socket");
  sockets[0].open();
  const behind = open({ resume: "session", saved: { [key]: '{"news":"e1.3"}' } });
  behind.follow("news");
  await until(() => requests.length === 1, "the history request");
  sockets[0].receive({ op: "reset", channel: "news", id: "e2.0", reason: "epoch" });
  await until(() => live.seen.length === 1, "the live reset");
  requests[0].respond(200, {
    events: [],
    resets: [{ channel: "news", id: "e2.0", reason: "epoch" }],
    cursor: "e2.0",
  });
  await until(() => behind.seen.length === 1, "the reset from history");
  sockets[0].receive(event("news", "e2.1"));
  await until(() => behind.seen.length === 2, "the next event");
  assert.deepEqual(behind.seen, [["reset", "e2.0"], "e2.1"]);
  assert.deepEqual(live.seen, [["reset", "e2.0"], "e2.1"]);
});

test("a shared worker that never answers gives way to a leading tab after openTimeout", async (t) => {
  const { open, sockets, base } = browser(t);
  const workers = [];
  class SilentWorker {
    constructor(url, options) {
      workers.push({ url: String(url), options });
      this.port = { postMessage() {}, close() {} };
    }
  }
  const tab = open({}, (window) => (window.SharedWorker = SilentWorker));
  tab.follow("news");
  await tab.clock.advance(9999);
  assert.equal(sockets.length, 0);
  assert.deepEqual(workers, [
    { url: new URL("../tidings.js", import.meta.url).href, options: { type: "module", name: "tidings " + base } },
  ]);
  await tab.clock.advance(1);
  await until(() => sockets.length === 1, "the leading tab's socket");
});
