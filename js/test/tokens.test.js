// Connection tokens: a string or a function, asked at connect and after a 401 or a close 4001;
// each transport resumes from its cursor; a token refused for good and a forbidden channel
// surface as errors instead of a retry loop.

import assert from "node:assert/strict";
import test from "node:test";

import { settle, setup } from "../testing/fakes.js";

const EXPIRED = { error: { code: "unauthorized", message: "token expired" } };
const event = (id) => ({ channel: "news", id, event: "message", data: id, ts: 1 });
const sseEvent = (id) => `id: ${id}\ndata: ${JSON.stringify(event(id))}\n\n`;

test("a token function is asked at connect; the WebSocket carries it as ?token=", async () => {
  let asked = 0;
  const { client, sockets } = setup({ token: async () => `t${++asked}` });
  await settle();
  assert.equal(asked, 1);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url.searchParams.get("token"), "t1");
  client.close();
});

test("WebSocket close 4001: a new token, a new socket, resumed after the last event", async () => {
  const tokens = ["t1", "t2"];
  const { client, clock, sockets } = setup({ token: () => tokens.shift() });
  const seen = [];
  client.subscribe("news", { onEvent: ({ id }) => seen.push(id) });
  await settle();
  sockets[0].open();
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "news", id: "e1.4" });
  sockets[0].receive({ op: "event", ...event("e1.5") });
  sockets[0].drop(4001, "token expired");
  await clock.advance(clock.delays[0]);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url.searchParams.get("token"), "t2");
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [{ op: "subscribe", channel: "news", since: "e1.5", ref: 2 }]);
  sockets[1].receive({ op: "event", ...event("e1.5") }); // a repeat is dropped
  sockets[1].receive({ op: "event", ...event("e1.6") });
  assert.deepEqual(seen, ["e1.5", "e1.6"]);
  client.close();
});

test("SSE ended early, then 401: a new token in the header, resumed after the last event", async () => {
  const tokens = ["t1", "t2"];
  const { client, clock, requests } = setup({ transports: ["sse"], token: () => tokens.shift() });
  const seen = [];
  client.subscribe("news", { onEvent: ({ id }) => seen.push(id) });
  await settle();
  assert.equal(requests[0].header("Authorization"), "Bearer t1");
  assert.equal(requests[0].param("token"), null);
  const first = requests[0].stream();
  first.push("retry: 100\nid: e1.4\n\n" + sseEvent("e1.5"));
  await settle();
  first.end(); // the token expired: the server ends the stream
  await settle();
  await clock.advance(clock.delays[0]);
  assert.equal(requests[1].header("Authorization"), "Bearer t1");
  requests[1].respond(401, EXPIRED);
  await settle();
  await clock.advance(clock.delays[0]);
  assert.equal(requests.length, 3);
  assert.equal(requests[2].header("Authorization"), "Bearer t2");
  assert.equal(requests[2].param("since"), "e1.5");
  const second = requests[2].stream();
  second.push("id: e1.5\n\n" + sseEvent("e1.5") + sseEvent("e1.6"));
  await settle();
  assert.deepEqual(seen, ["e1.5", "e1.6"]);
  assert.equal(client.state, "connected");
  client.close();
});

test("a poll answered 401: a new token in the header, resumed from the cursor", async () => {
  const tokens = ["t1", "t2"];
  const { client, clock, requests } = setup({ transports: ["poll"], token: () => tokens.shift() });
  client.subscribe("news");
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.4" });
  await clock.advance(2000);
  assert.equal(requests[1].header("Authorization"), "Bearer t1");
  requests[1].respond(401, EXPIRED);
  await settle();
  await clock.advance(clock.delays[0]);
  assert.equal(requests[2].header("Authorization"), "Bearer t2");
  assert.equal(requests[2].param("since"), "e1.4");
  client.close();
});

test("a token refused even when renewed stops the client with an error, backing off", async () => {
  let asked = 0;
  const { client, clock, requests, events } = setup({
    transports: ["poll"],
    token: () => (asked++, "bad"),
  });
  const errors = [];
  client.on("error", (error) => errors.push(error));
  client.subscribe("news");
  await settle();
  const delays = [];
  for (let index = 0; index < 4; index++) {
    requests[index].respond(401, EXPIRED);
    await settle();
    delays.push(...clock.delays);
    await clock.advance(clock.delays[0] ?? 0);
  }
  assert.equal(asked, 4); // the first token and tokenRetries (3) renewals
  assert.equal(requests.length, 4);
  assert.deepEqual(delays, [250, 500, 1000]);
  assert.deepEqual(clock.delays, []);
  assert.deepEqual(events.at(-1), ["disconnected", "401 token expired", null]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "unauthorized");
});

test("a fixed token refused stops the client with an error at once", async () => {
  const { client, requests, clock } = setup({ transports: ["sse"], token: "stale" });
  const errors = [];
  client.on("error", (error) => errors.push(error));
  client.subscribe("news");
  await settle();
  requests[0].respond(401, EXPIRED);
  await settle();
  assert.deepEqual(clock.delays, []);
  assert.deepEqual(errors.map((error) => error.code), ["unauthorized"]);
});

test("HTTP 403 on a new channel: onError for it, the other channels go on without it", async () => {
  const { client, clock, requests } = setup({ transports: ["poll"], token: "t" });
  const errors = [];
  client.subscribe("news");
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.4" });
  await settle();
  client.subscribe("secret", { onError: (error) => errors.push(error) });
  await settle();
  assert.deepEqual(requests[1].params("channel"), ["secret"]); // its cursor, first
  requests[1].respond(403, { error: { code: "forbidden", message: "not for this token" } });
  await settle();
  assert.deepEqual(errors.map((error) => error.code), ["forbidden"]);
  await clock.advance(clock.delays[0]);
  assert.deepEqual(requests[2].params("channel"), ["news"]);
  assert.equal(requests[2].param("since"), "e1.4");
  requests[2].respond(200, { events: [], cursor: "e1.4" });
  await clock.advance(2000);
  assert.equal(requests.filter((request) => request.params("channel").includes("secret")).length, 1);
  assert.equal(client.state, "connected");
  client.close();
});

test("WebSocket forbidden on one channel: onError for it, no retry, the others go on", async () => {
  const { client, sockets } = setup({ token: "t" });
  const errors = [];
  const seen = [];
  client.subscribe("news", { onEvent: ({ id }) => seen.push(id) });
  client.subscribe("secret", { onError: (error) => errors.push(error) });
  await settle();
  sockets[0].open();
  sockets[0].receive({ op: "error", ref: 2, code: "forbidden", message: "not for this token" });
  sockets[0].receive({ op: "subscribed", ref: 1, channel: "news", id: "e1.0" });
  sockets[0].receive({ op: "event", ...event("e1.1") });
  assert.deepEqual(errors.map((error) => error.code), ["forbidden"]);
  assert.deepEqual(seen, ["e1.1"]);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].sent.filter((message) => message.channel === "secret").length, 1);
  client.close();
});
