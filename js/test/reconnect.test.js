// Reconnecting: exponential backoff with full jitter, server-given delays, close codes, token
// renewal, the page coming back, heartbeats.

import assert from "node:assert/strict";
import test from "node:test";

import { settle, setup } from "../testing/fakes.js";

/** Refuse every WebSocket handshake and collect the delays the client waits in between. */
async function refusals(count, options) {
  const { client, clock, sockets } = setup({ transports: ["websocket"], ...options });
  await settle();
  const delays = [];
  for (let index = 0; index < count; index++) {
    sockets[index].refuse();
    delays.push(...clock.delays);
    await clock.advance(clock.delays[0]);
  }
  assert.equal(sockets.length, count + 1);
  client.close();
  return delays;
}

test("the backoff doubles from 500 ms and caps at 30 s", async () => {
  const delays = await refusals(9);
  // random() is 0.5: half of each bound 500, 1000, ... 30000
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
});

test("the backoff is jittered over the whole interval", async () => {
  const draws = [0, 0.999, 0.3, 0.999, 0.999, 0.999, 0.999, 0.999];
  const random = () => draws.shift();
  const delays = await refusals(8, { random });
  const bounds = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
  assert.deepEqual(delays, [0, 0.999 * 1000, 0.3 * 2000, 3996, 7992, 15984, 29970, 29970]);
  delays.forEach((delay, index) => assert.ok(delay >= 0 && delay < bounds[index]));
});

test("minDelay and maxDelay are configurable", async () => {
  const delays = await refusals(4, { minDelay: 100, maxDelay: 600, random: () => 1 });
  assert.deepEqual(delays, [100, 200, 400, 600]);
});

test("the backoff starts over once a connection opens", async () => {
  const { clock, sockets } = setup({ transports: ["websocket"] });
  await settle();
  sockets[0].refuse();
  await clock.advance(250);
  sockets[1].refuse();
  await clock.advance(500);
  sockets[2].open();
  sockets[2].drop(1006);
  assert.deepEqual(clock.delays, [250]);
});

test("an SSE retry: is the least delay before reconnecting", async () => {
  const { client, clock, requests, events } = setup({ transports: ["sse"] });
  client.subscribe("news");
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 7000\nid: e1.4\n\n");
  await settle();
  stream.end(); // a draining server: retry: with a random delay, then the end
  await settle();
  assert.deepEqual(events.at(-1), ["disconnected", "the event stream ended", 7000]);
  await clock.advance(6999);
  assert.equal(requests.length, 1);
  await clock.advance(1);
  assert.equal(requests.length, 2);
  assert.equal(requests[1].param("since"), "e1.4");
});

test("a retry: shorter than the backoff does not shorten it", async () => {
  const { client, clock, requests } = setup({ transports: ["sse"], random: () => 1 });
  client.subscribe("news");
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 100\n\n");
  await settle();
  stream.end();
  await settle();
  assert.deepEqual(clock.delays, [500]);
});

test("Retry-After of a 503 is respected, on the same technique", async () => {
  const { client, clock, requests } = setup({ transports: ["long_poll", "poll"] });
  client.subscribe("news");
  await settle();
  const error = { error: { code: "unavailable", message: "the broker is unreachable" } };
  requests[0].respond(503, error, { "Retry-After": "5" });
  await settle();
  assert.deepEqual(clock.delays, [5000]);
  await clock.advance(5000);
  assert.equal(requests[1].path, "/poll");
  assert.equal(requests[1].param("timeout"), "0"); // still long polling: its first request
  assert.equal(client.transport, "long_poll");
});

test("WebSocket close 1012 and 1001 come back at a random moment of the drain window", async () => {
  for (const code of [1012, 1001]) {
    const { clock, sockets, events } = setup({ random: () => 0.25 });
    await settle();
    sockets[0].open();
    sockets[0].drop(code, "server restarting");
    assert.deepEqual(events.at(-1), [
      "disconnected",
      `WebSocket closed with ${code}: server restarting`,
      2500,
    ]);
    await clock.advance(2500);
    assert.equal(sockets.length, 2);
  }
});

test("WebSocket close 4000 (too slow) reconnects with the backoff and resumes", async () => {
  const { client, clock, sockets } = setup();
  client.subscribe("news", { since: "e1.7" });
  await settle();
  sockets[0].open();
  sockets[0].receive({ op: "event", channel: "news", id: "e1.8", event: "message", data: 1, ts: 1 });
  sockets[0].drop(4000, "too slow");
  assert.deepEqual(clock.delays, [250]);
  await clock.advance(250);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [{ op: "subscribe", channel: "news", since: "e1.8", ref: 2 }]);
});

test("WebSocket close 4001 asks getToken() for a new token and reconnects with it", async () => {
  const tokens = [];
  const getToken = async () => {
    tokens.push("asked");
    return "fresh";
  };
  const { clock, sockets } = setup({ token: "stale", getToken });
  await settle();
  assert.equal(sockets[0].url.searchParams.get("token"), "stale");
  sockets[0].open();
  sockets[0].drop(4001, "token expired");
  await clock.advance(250);
  assert.deepEqual(tokens, ["asked"]);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url.searchParams.get("token"), "fresh");
});

test("without getToken, an expired token stops the client", async () => {
  const { client, clock, sockets, events } = setup({ token: "stale" });
  await settle();
  sockets[0].open();
  sockets[0].drop(4001, "token expired");
  assert.deepEqual(events.at(-1), ["disconnected", "WebSocket closed with 4001: token expired", null]);
  assert.deepEqual(clock.delays, []);
  assert.equal(client.state, "disconnected");
});

test("an HTTP 401 renews the token and starts the ladder again", async () => {
  const { client, clock, sockets, requests } = setup({
    token: "stale",
    getToken: () => "fresh",
  });
  client.subscribe("news");
  await settle();
  sockets[0].refuse(); // a 401 handshake looks like a refusal to a browser
  await clock.advance(0);
  assert.equal(requests[0].header("Authorization"), "Bearer stale");
  requests[0].respond(401, { error: { code: "unauthorized", message: "token expired" } });
  await settle();
  assert.deepEqual(clock.delays, [250]);
  await clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url.searchParams.get("token"), "fresh");
});

test("a 4xx answer stops the client with the server's message", async () => {
  const { client, clock, requests, events } = setup({ transports: ["sse"] });
  client.subscribe("news");
  await settle();
  const error = { error: { code: "too_many_channels", message: "at most 100 channels" } };
  requests[0].respond(400, error);
  await settle();
  assert.deepEqual(events.at(-1), ["disconnected", "400 at most 100 channels", null]);
  assert.deepEqual(clock.delays, []);
});

test("the page coming back online or visible reconnects at once", async () => {
  const { clock, sockets, window } = setup();
  await settle();
  sockets[0].open();
  sockets[0].drop(1006);
  assert.deepEqual(clock.delays, [250]);
  window.dispatchEvent(new Event("online"));
  assert.equal(sockets.length, 2);
  assert.deepEqual(clock.delays, [10000]); // only the handshake's own timeout is left
  sockets[1].refuse();
  window.document.visibilityState = "hidden";
  window.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(sockets.length, 2);
  window.document.visibilityState = "visible";
  window.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(sockets.length, 3);
});

test("close() stops listening to the page", async () => {
  const { client, clock, sockets, window } = setup();
  await settle();
  sockets[0].refuse();
  client.close();
  window.dispatchEvent(new Event("online"));
  await clock.advance(60000);
  assert.equal(sockets.length, 1);
});

test("a WebSocket that does not answer its ping is replaced", async () => {
  const { clock, sockets, events } = setup();
  await settle();
  sockets[0].open();
  await clock.advance(20000);
  assert.deepEqual(sockets[0].sent, [{ op: "ping" }]);
  sockets[0].receive({ op: "pong", ref: null });
  await clock.advance(19999);
  assert.equal(sockets[0].sent.length, 1);
  await clock.advance(1);
  assert.equal(sockets[0].sent.length, 2);
  await clock.advance(9999);
  assert.equal(sockets[0].closed, false);
  await clock.advance(1);
  assert.equal(sockets[0].closed, true);
  assert.deepEqual(events.at(-1), ["disconnected", "no answer to ping", 250]);
});

test("an event stream silent for heartbeatTimeout is replaced; : ping keeps it", async () => {
  const { client, clock, requests, events } = setup({ transports: ["sse"] });
  client.subscribe("news");
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 2000\nid: e1.4\n\n");
  await clock.advance(30000);
  stream.push(": ping\n\n");
  await clock.advance(34999);
  assert.equal(client.state, "connected");
  await clock.advance(1);
  assert.equal(requests[0].aborted, true);
  assert.deepEqual(events.at(-1), ["disconnected", "no heartbeat on the event stream", 2000]);
});

test("a long poll unanswered past its timeout is replaced", async () => {
  const { client, clock, requests, events } = setup({ transports: ["long_poll"] });
  client.subscribe("news");
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.4" });
  await clock.advance(0);
  assert.equal(requests[1].param("timeout"), "25");
  await clock.advance(34999);
  assert.equal(requests[1].aborted, false);
  await clock.advance(1);
  assert.equal(requests[1].aborted, true);
  assert.deepEqual(events.at(-1), ["disconnected", "no answer to a poll in 35000 ms", 250]);
  await clock.advance(250);
  assert.equal(requests[2].param("since"), "e1.4");
});
