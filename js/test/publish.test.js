// Publishing over the WebSocket, errors the server answers, and close().

import assert from "node:assert/strict";
import test from "node:test";

import { TidingsError } from "../tidings.js";
import { settle, setup } from "../testing/fakes.js";

async function connected(options) {
  const fixture = setup(options);
  await settle();
  fixture.sockets[0].open();
  return fixture;
}

test("publish resolves with the event's cursor", async () => {
  const { client, sockets } = await connected();
  const published = client.publish("chat:lobby", { text: "hi" }, { event: "note", idempotencyKey: "k1" });
  assert.deepEqual(sockets[0].sent, [
    { op: "publish", channel: "chat:lobby", data: { text: "hi" }, event: "note", idempotency_key: "k1", ref: 1 },
  ]);
  sockets[0].receive({ op: "published", ref: 1, channel: "chat:lobby", id: "e1.42" });
  assert.equal(await published, "e1.42");
});

test("publish answers each call by its ref, in any order", async () => {
  const { client, sockets } = await connected();
  const first = client.publish("a", 1);
  const second = client.publish("a", null);
  assert.deepEqual(sockets[0].sent.map((m) => [m.ref, m.data]), [[1, 1], [2, null]]);
  sockets[0].receive({ op: "published", ref: 2, channel: "a", id: "e1.2" });
  sockets[0].receive({ op: "published", ref: 1, channel: "a", id: "e1.3" });
  assert.deepEqual(await Promise.all([first, second]), ["e1.3", "e1.2"]);
});

test("publish rejects with the server's error code and message", async () => {
  const { client, sockets } = await connected();
  const published = client.publish("news", "x");
  const message = "clients may not publish to 'news'";
  sockets[0].receive({ op: "error", ref: 1, code: "forbidden", message });
  await assert.rejects(published, (error) => {
    assert.ok(error instanceof TidingsError);
    assert.equal(error.code, "forbidden");
    assert.equal(error.message, message);
    return true;
  });
});

test("publish rejects at once when not connected over a WebSocket", async () => {
  const { client, requests } = setup({ transports: ["sse"] });
  client.subscribe("news");
  await settle();
  requests[0].stream().push("retry: 2000\n\n");
  await settle();
  await assert.rejects(client.publish("news", 1), {
    name: "TidingsError",
    code: "not_connected",
    message: "publish needs a WebSocket connection (connected over sse)",
  });
  const waiting = setup();
  await assert.rejects(waiting.client.publish("news", 1), {
    code: "not_connected",
    message: "publish needs a WebSocket connection (disconnected)",
  });
});

test("a publish still unanswered when the socket drops is rejected", async () => {
  const { client, sockets } = await connected();
  const published = client.publish("news", 1);
  sockets[0].drop(1006);
  await assert.rejects(published, {
    code: "disconnected",
    message: "disconnected before an answer: WebSocket closed with 1006",
  });
});

test("a subscription the server refuses gets onError and is dropped", async () => {
  const { client, clock, sockets } = await connected();
  const errors = [];
  client.subscribe("secret", { onError: (error) => errors.push([error.code, error.message]) });
  client.subscribe("news");
  await settle();
  sockets[0].receive({ op: "error", ref: 1, code: "forbidden", message: "not for you" });
  assert.deepEqual(errors, [["forbidden", "not for you"]]);
  sockets[0].drop(1006);
  await clock.advance(250);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent.map((m) => m.channel), ["news"]);
});

test("close() ends the connection, says so once, and never reconnects", async () => {
  const { client, clock, sockets, events } = await connected();
  client.close();
  client.close();
  assert.equal(sockets[0].closed, true);
  assert.equal(client.state, "closed");
  assert.equal(client.transport, null);
  assert.deepEqual(events, [
    ["connecting", "websocket"],
    ["connected", "websocket"],
    ["disconnected", "closed", null],
  ]);
  await clock.advance(60000);
  assert.equal(sockets.length, 1);
  assert.throws(() => client.subscribe("news"), { code: "closed" });
});

test("a throwing onEvent is reported and does not stop the others", async () => {
  const { client, sockets, window } = await connected();
  const reported = [];
  window.reportError = (error) => reported.push(error.message);
  const got = [];
  client.subscribe("news", {
    onEvent: () => {
      throw new Error("application bug");
    },
  });
  client.subscribe("news", { onEvent: (e) => got.push(e.id) });
  await settle();
  sockets[0].receive({ op: "event", channel: "news", id: "e1.1", event: "message", data: 0, ts: 0 });
  sockets[0].receive({ op: "event", channel: "news", id: "e1.2", event: "message", data: 0, ts: 0 });
  assert.deepEqual(got, ["e1.1", "e1.2"]);
  assert.deepEqual(reported, ["application bug", "application bug"]);
});

test("on() returns a function that removes the listener", async () => {
  const { client, sockets } = setup();
  const seen = [];
  const off = client.on("connected", (name) => seen.push(name));
  off();
  await settle();
  sockets[0].open();
  assert.deepEqual(seen, []);
});
