// Resuming from the last cursor on every technique, dropping repeated offsets, and resets.

import assert from "node:assert/strict";
import test from "node:test";

import { settle, setup } from "../testing/fakes.js";

const event = (channel, id, data = id) => ({ channel, id, event: "message", data, ts: 1700 });

function record(client, channel, options = {}) {
  const seen = [];
  const sub = client.subscribe(channel, {
    ...options,
    onEvent: (e) => seen.push(e.id),
    onReset: (reset) => seen.push(["reset", reset]),
  });
  return { seen, sub };
}

test("WebSocket: subscribe from now, then resume from the last event after a drop", async () => {
  const { client, clock, sockets } = setup();
  const { seen, sub } = record(client, "news");
  await settle();
  sockets[0].open();
  assert.deepEqual(sockets[0].sent, [{ op: "subscribe", channel: "news", ref: 1 }]);
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "news", id: "e1.5" });
  assert.equal(sub.cursor, "e1.5");
  sockets[0].receive({ op: "event", ...event("news", "e1.6") });
  sockets[0].receive({ op: "event", ...event("news", "e1.7") });
  sockets[0].drop(1006);
  await clock.advance(250);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [{ op: "subscribe", channel: "news", since: "e1.7", ref: 2 }]);
  sockets[1].receive({ op: "subscribed", ref: 2, channel: "news", id: "e1.7", recovered: true });
  sockets[1].receive({ op: "event", ...event("news", "e1.8") });
  assert.deepEqual(seen, ["e1.6", "e1.7", "e1.8"]);
});

test("WebSocket: a channel subscribed before the drop with no event yet resumes from subscribed's id", async () => {
  const { client, clock, sockets } = setup();
  client.subscribe("a");
  client.subscribe("b", { since: "x9.3" });
  await settle();
  sockets[0].open();
  assert.deepEqual(sockets[0].sent, [
    { op: "subscribe", channel: "a", ref: 1 },
    { op: "subscribe", channel: "b", since: "x9.3", ref: 2 },
  ]);
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "a", id: "e1.0" });
  sockets[0].drop(1006);
  await clock.advance(250);
  sockets[1].open();
  assert.deepEqual(
    sockets[1].sent.map((message) => [message.channel, message.since]),
    [["a", "e1.0"], ["b", "x9.3"]],
  );
});

test("WebSocket: subscribing and closing on an open socket sends subscribe and unsubscribe", async () => {
  const { client, sockets } = setup();
  const first = client.subscribe("a");
  await settle();
  sockets[0].open();
  client.subscribe("b");
  first.close();
  await settle();
  assert.deepEqual(sockets[0].sent.slice(1), [
    { op: "subscribe", channel: "b", ref: 2 },
    { op: "unsubscribe", channel: "a" },
  ]);
});

test("SSE: one stream for all channels; a reconnect sends the cursor list", async () => {
  const { client, clock, requests } = setup({ transports: ["sse"] });
  const a = record(client, "chat:a");
  const b = record(client, "chat:b");
  await settle();
  assert.equal(requests.length, 1);
  assert.deepEqual(requests[0].params("channel"), ["chat:a", "chat:b"]);
  assert.equal(requests[0].param("since"), null);
  const stream = requests[0].stream();
  stream.push("retry: 2000\nid: e1.3,f2.0\n\n");
  stream.push(`id: e1.3,f2.1\nevent: message\ndata: ${JSON.stringify(event("chat:b", "f2.1"))}\n\n`);
  stream.push(": ping\n\n");
  stream.push(`id: e1.4,f2.1\nevent: message\ndata: ${JSON.stringify(event("chat:a", "e1.4"))}\n`);
  stream.push("\n");
  await settle();
  stream.end();
  await clock.advance(2000);
  assert.equal(requests.length, 2);
  assert.deepEqual(requests[1].params("channel"), ["chat:a", "chat:b"]);
  assert.equal(requests[1].param("since"), "e1.4,f2.1");
  assert.equal(requests[1].param("envelope"), "1");
  assert.deepEqual(a.seen, ["e1.4"]);
  assert.deepEqual(b.seen, ["f2.1"]);
});

test("SSE: the opening id: is the cursor to resume from before any event", async () => {
  const { client, clock, requests } = setup({ transports: ["sse"] });
  client.subscribe("news");
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 2000\nid: e1.9\n\n");
  await settle();
  stream.end();
  await clock.advance(2000);
  assert.equal(requests[1].param("since"), "e1.9");
});

test("SSE: events split anywhere across chunks, even inside a character, arrive whole", async () => {
  const { client, requests } = setup({ transports: ["sse"] });
  const got = [];
  client.subscribe("news", { since: "e1.1", onEvent: (e) => got.push([e.id, e.data]) });
  await settle();
  const stream = requests[0].stream();
  const text =
    "retry: 2000\r\nid: e1.1\r\n\r\n" +
    `id: e1.2\nevent: message\ndata: ${JSON.stringify(event("news", "e1.2", "h\u00e9"))}\n\n`;
  for (const byte of new TextEncoder().encode(text)) stream.push(new Uint8Array([byte]));
  await settle();
  assert.deepEqual(got, [["e1.2", "h\u00e9"]]);
});

test("SSE: a new channel reopens the stream from the cursors, asking the new one's first", async () => {
  const { client, requests, events } = setup({ transports: ["sse"] });
  client.subscribe("a");
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 2000\nid: e1.3\n\n");
  await settle();
  client.subscribe("b");
  await settle();
  assert.equal(requests[0].aborted, true);
  const head = requests[1];
  assert.equal(head.path, "/poll");
  assert.deepEqual(head.params("channel"), ["b"]);
  assert.equal(head.param("since"), null);
  head.respond(200, { events: [], cursor: "f2.8" });
  await settle();
  assert.equal(requests[2].path, "/sse");
  assert.deepEqual(requests[2].params("channel"), ["a", "b"]);
  assert.equal(requests[2].param("since"), "e1.3,f2.8");
  assert.deepEqual(events.map((e) => e[0]), ["connecting", "connected"]);
});

test("long polling: each request continues from the cursor list of the last answer", async () => {
  const { client, clock, requests } = setup({ transports: ["long_poll"] });
  const a = record(client, "a");
  const b = record(client, "b");
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.3,f2.0" });
  await clock.advance(0);
  assert.equal(requests[1].param("since"), "e1.3,f2.0");
  assert.deepEqual(requests[1].params("channel"), ["a", "b"]);
  requests[1].respond(200, { events: [event("b", "f2.1"), event("a", "e1.4")], cursor: "e1.4,f2.1" });
  await clock.advance(0);
  assert.equal(requests[2].param("since"), "e1.4,f2.1");
  requests[2].respond(204, null, { "Tidings-Cursor": "e1.4,f2.1" });
  await clock.advance(0);
  assert.equal(requests[3].param("since"), "e1.4,f2.1");
  requests[3].fail();
  await clock.advance(250);
  assert.equal(requests[4].param("since"), "e1.4,f2.1");
  assert.equal(requests[4].param("timeout"), "0");
  assert.deepEqual(a.seen, ["e1.4"]);
  assert.deepEqual(b.seen, ["f2.1"]);
});

test("short polling: If-None-Match with the last ETag; 304 keeps the cursor", async () => {
  const { client, clock, requests } = setup({ transports: ["poll"] });
  const { seen } = record(client, "news", { since: "e1.2" });
  await settle();
  assert.equal(requests[0].param("since"), "e1.2");
  assert.equal(requests[0].header("If-None-Match"), null);
  requests[0].respond(200, { events: [event("news", "e1.3")], cursor: "e1.3" }, { ETag: '"e1.3"' });
  await clock.advance(2000);
  assert.equal(requests[1].header("If-None-Match"), '"e1.3"');
  requests[1].respond(304, null, { ETag: '"e1.3"', "Tidings-Cursor": "e1.3" });
  await clock.advance(2000);
  assert.equal(requests[2].param("since"), "e1.3");
  assert.equal(requests[2].header("If-None-Match"), '"e1.3"');
  assert.deepEqual(seen, ["e1.3"]);
});

test("repeated offsets are dropped; a new epoch after a reset is delivered", async () => {
  const { client, sockets } = setup();
  const { seen } = record(client, "news", { since: "e1.0" });
  await settle();
  sockets[0].open();
  for (const id of ["e1.1", "e1.2", "e1.2", "e1.1", "e1.3", "e1.10", "e1.9"])
    sockets[0].receive({ op: "event", ...event("news", id) });
  sockets[0].receive({ op: "reset", channel: "news", id: "k7.4", reason: "epoch" });
  sockets[0].receive({ op: "event", ...event("news", "k7.4") });
  sockets[0].receive({ op: "event", ...event("news", "k7.5") });
  assert.deepEqual(seen, [
    "e1.1",
    "e1.2",
    "e1.3",
    "e1.10",
    ["reset", { channel: "news", id: "k7.4", reason: "epoch" }],
    "k7.5",
  ]);
});

test("events reach every subscription of a channel, as the documented object", async () => {
  const { client, sockets } = setup();
  const got = [];
  client.subscribe("news", { onEvent: (e) => got.push(["one", e]) });
  client.subscribe("news", { onEvent: (e) => got.push(["two", e.id]) });
  await settle();
  sockets[0].open();
  assert.equal(sockets[0].sent.length, 1);
  sockets[0].receive({ op: "event", ...event("news", "e1.1", { text: "hi" }) });
  assert.deepEqual(got, [
    ["one", { channel: "news", id: "e1.1", event: "message", data: { text: "hi" }, ts: 1700 }],
    ["two", "e1.1"],
  ]);
});

test("WebSocket reset: onReset, then the next reconnect continues from the reset's cursor", async () => {
  const { client, clock, sockets } = setup();
  const { seen } = record(client, "news", { since: "e1.40" });
  await settle();
  sockets[0].open();
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "news", id: "e1.40", recovered: false });
  sockets[0].receive({ op: "reset", channel: "news", id: "e1.97", reason: "gap" });
  sockets[0].receive({ op: "event", ...event("news", "e1.98") });
  sockets[0].drop(1006);
  await clock.advance(250);
  sockets[1].open();
  assert.equal(sockets[1].sent[0].since, "e1.98");
  assert.deepEqual(seen, [["reset", { channel: "news", id: "e1.97", reason: "gap" }], "e1.98"]);
});

test("SSE reset: tidings.reset calls onReset and the stream goes on from it", async () => {
  const { client, clock, requests } = setup({ transports: ["sse"] });
  const { seen } = record(client, "news", { since: "e1.40" });
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 2000\nid: e1.40\n\n");
  const reset = { channel: "news", id: "e1.97", reason: "gap" };
  stream.push(`id: e1.97\nevent: tidings.reset\ndata: ${JSON.stringify(reset)}\n\n`);
  await settle();
  assert.deepEqual(seen, [["reset", reset]]);
  stream.end();
  await clock.advance(2000);
  assert.equal(requests[1].param("since"), "e1.97");
});

test("poll reset: resets[] calls onReset beside other channels' events", async () => {
  const { client, clock, requests } = setup({ transports: ["long_poll"] });
  const a = record(client, "a", { since: "e1.40" });
  const b = record(client, "b", { since: "f2.1" });
  await settle();
  assert.equal(requests[0].param("since"), "e1.40,f2.1");
  const reset = { channel: "a", id: "g3.0", reason: "epoch" };
  requests[0].respond(200, { events: [event("b", "f2.2")], cursor: "g3.0,f2.2", resets: [reset] });
  await clock.advance(0);
  assert.deepEqual(a.seen, [["reset", reset]]);
  assert.deepEqual(b.seen, ["f2.2"]);
  assert.equal(requests[1].param("since"), "g3.0,f2.2");
});

test("subscribe checks channel names and cursors", () => {
  const { client } = setup();
  assert.throws(() => client.subscribe("bad channel"), { name: "TypeError" });
  assert.throws(() => client.subscribe("x".repeat(129)), { name: "TypeError" });
  assert.throws(() => client.subscribe("news", { since: "e1.07" }), { name: "TypeError" });
  assert.throws(() => client.subscribe("news", { since: "e1" }), { name: "TypeError" });
  assert.equal(client.subscribe("chat:room-1/a@b_c.d", { since: "Ab9.0" }).cursor, "Ab9.0");
  client.close();
});

test("cross-origin polls carry the token as a header, never in the URL, and no If-None-Match", async () => {
  const { client, clock, requests } = setup({
    transports: ["poll"],
    token: "t0k",
    window: Object.assign(new EventTarget(), {
      location: { href: "https://app.test/page", origin: "https://app.test" },
    }),
  });
  client.subscribe("news", { since: "e1.2" });
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.2" }, { ETag: '"e1.2"' });
  await clock.advance(2000);
  assert.equal(requests[1].param("token"), null);
  assert.deepEqual(requests[1].init.headers, { Authorization: "Bearer t0k" });
});

test("same-origin polls carry the token as a header", async () => {
  const { client, requests } = setup({
    url: "/rt",
    transports: ["poll"],
    token: "t0k",
    window: Object.assign(new EventTarget(), {
      location: { href: "https://app.test/page", origin: "https://app.test" },
    }),
  });
  client.subscribe("news");
  await settle();
  assert.equal(requests[0].url.href, "https://app.test/rt/poll?channel=news&timeout=0");
  assert.deepEqual(requests[0].init.headers, { Authorization: "Bearer t0k" });
});
