// The server in control: rewind=N on each technique, a channel ended by the server (never
// subscribed again), and a disconnect that refuses the token (no reconnect, an `error` event).

import assert from "node:assert/strict";
import test from "node:test";

import { settle, setup } from "../testing/fakes.js";

const event = (channel, id, data = id) => ({ channel, id, event: "message", data, ts: 1700 });

function watched(options) {
  const made = setup(options);
  const errors = [];
  made.client.on("error", (error) => errors.push(error.code));
  return { ...made, errors };
}

test("WebSocket: rewind is sent with a subscribe that has no cursor, never after", async () => {
  const { client, clock, sockets } = setup();
  const seen = [];
  client.subscribe("news", { rewind: 2, onEvent: (e) => seen.push(e.id) });
  client.subscribe("kept", { rewind: 5, since: "k1.3" });
  await settle();
  sockets[0].open();
  assert.deepEqual(sockets[0].sent, [
    { op: "subscribe", channel: "news", rewind: 2, ref: 1 },
    { op: "subscribe", channel: "kept", since: "k1.3", ref: 2 },
  ]);
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "news", id: "e1.3" });
  sockets[0].receive({ op: "event", ...event("news", "e1.4") });
  sockets[0].receive({ op: "event", ...event("news", "e1.5") });
  sockets[0].drop(1006);
  await clock.advance(250);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent[0], { op: "subscribe", channel: "news", since: "e1.5", ref: 3 });
  assert.deepEqual(seen, ["e1.4", "e1.5"]);
});

test("a rewind that is not a whole number is refused at once", () => {
  const { client } = setup();
  for (const rewind of [-1, 1.5, "3"])
    assert.throws(() => client.subscribe("news", { rewind }), TypeError);
});

test("SSE: a rewind is read by the first poll, then the stream resumes after it", async () => {
  const { client, requests } = setup({ transports: ["sse"] });
  const seen = [];
  client.subscribe("news", { rewind: 2, onEvent: (e) => seen.push(e.id) });
  await settle();
  assert.equal(requests[0].path, "/poll");
  assert.equal(requests[0].param("rewind"), "2");
  requests[0].respond(200, { events: [event("news", "e1.4"), event("news", "e1.5")], cursor: "e1.5" });
  await settle();
  assert.equal(requests[1].path, "/sse");
  assert.equal(requests[1].param("since"), "e1.5");
  assert.equal(requests[1].param("rewind"), null);
  assert.deepEqual(seen, ["e1.4", "e1.5"]);
});

test("WebSocket close 4003 stops the client with an error; 4002 comes back at once", async () => {
  const { client, clock, sockets, errors } = watched();
  client.subscribe("news");
  await settle();
  sockets[0].open();
  sockets[0].drop(4002, "disconnected by the server: reconnect and resume");
  assert.deepEqual(clock.delays, [0]);
  await clock.advance(0);
  assert.equal(sockets.length, 2);
  sockets[1].open();
  sockets[1].drop(4003, "disconnected by the server: do not reconnect");
  assert.deepEqual(clock.delays, []);
  await clock.advance(60000);
  assert.equal(sockets.length, 2);
  assert.equal(client.state, "disconnected");
  assert.deepEqual(errors, ["disconnected"]);
});

test("SSE tidings.disconnect without reconnect stops the client with an error", async () => {
  const { client, clock, requests, errors } = watched({ transports: ["sse"] });
  client.subscribe("news");
  await settle();
  const stream = requests[0].stream();
  stream.push('retry: 2000\nid: e1.4\n\nevent: tidings.disconnect\ndata: {"reconnect":false}\n\n');
  await settle();
  await clock.advance(60000);
  assert.equal(requests.length, 1);
  assert.deepEqual(errors, ["disconnected"]);
});

test("a channel the server ends is dropped with onError and never subscribed again", async () => {
  const { client, clock, sockets } = setup();
  const refused = [];
  client.subscribe("news", { onError: (error) => refused.push(error.code) });
  client.subscribe("chat");
  await settle();
  sockets[0].open();
  sockets[0].receive({ op: "unsubscribed", ref: null, channel: "news", reason: "server" });
  assert.deepEqual(refused, ["unsubscribed"]);
  sockets[0].drop(1006);
  await clock.advance(250);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent.map((message) => message.channel), ["chat"]);
});

test("SSE and polls: the server's unsubscribed leaves the channel out from then on", async () => {
  const { client, clock, requests } = setup({ transports: ["long_poll"] });
  const refused = [];
  client.subscribe("news", { since: "e1.4", onError: (error) => refused.push(error.code) });
  client.subscribe("chat", { since: "c1.1" });
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.4,c1.1", unsubscribed: ["news"] });
  await settle();
  await clock.advance(0);
  assert.deepEqual(refused, ["unsubscribed"]);
  assert.deepEqual(requests.at(-1).params("channel"), ["chat"]);
  assert.equal(requests.at(-1).param("since"), "c1.1");

  const sse = setup({ transports: ["sse"] });
  const ended = [];
  sse.client.subscribe("news", { since: "e1.4", onError: (error) => ended.push(error.code) });
  await settle();
  const stream = sse.requests[0].stream();
  stream.push('event: tidings.unsubscribed\ndata: {"channel":"news","reason":"server"}\n\n');
  await settle();
  stream.end();
  await sse.clock.advance(60000);
  assert.deepEqual(ended, ["unsubscribed"]);
  assert.equal(sse.requests.length, 1); // no channel left: nothing to follow
});
