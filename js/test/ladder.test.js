// The fallback ladder: WebSocket, SSE, long polling, short polling; the `transports` option;
// remembering what worked.

import assert from "node:assert/strict";
import test from "node:test";

import { Tidings } from "../tidings.js";
import { BASE, fakeStorage, settle, setup } from "../testing/fakes.js";

const KEY = "tidings:" + BASE;

test("a refused WebSocket moves down to SSE, which is then remembered", async () => {
  const { client, clock, sockets, requests, storage, events } = setup();
  client.subscribe("news");
  await settle();
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url.href, "ws://tidings.test/ws");
  sockets[0].refuse();
  assert.deepEqual(clock.delays, [0]);
  await clock.advance(0);
  assert.equal(requests.length, 1);
  const [request] = requests;
  assert.equal(request.path, "/sse");
  assert.deepEqual(request.params("channel"), ["news"]);
  assert.equal(request.param("envelope"), "1");
  assert.equal(request.param("since"), null);
  request.stream().push("retry: 2000\nid: e1.4\n\n");
  await settle();
  assert.equal(client.transport, "sse");
  assert.equal(client.state, "connected");
  assert.deepEqual(events, [
    ["connecting", "websocket"],
    ["connecting", "sse"],
    ["connected", "sse"],
  ]);
  assert.equal(storage.data[KEY], "sse");
});

test("a WebSocket handshake that never completes moves down after openTimeout", async () => {
  const { client, clock, sockets, requests } = setup({ openTimeout: 3000 });
  client.subscribe("news");
  await clock.advance(2999);
  assert.equal(requests.length, 0);
  await clock.advance(1);
  assert.equal(sockets[0].closed, true);
  assert.equal(requests.length, 1);
  assert.equal(requests[0].path, "/sse");
});

test("an SSE stream whose first byte does not come in time moves down to long polling", async () => {
  const { client, clock, requests, events } = setup({ transports: ["sse", "long_poll"] });
  client.subscribe("news");
  await settle();
  requests[0].stream(); // headers, then nothing: a buffering proxy
  await clock.advance(3999);
  assert.equal(requests.length, 1);
  await clock.advance(1);
  assert.equal(requests[0].aborted, true);
  assert.equal(requests.length, 2);
  const first = requests[1];
  assert.equal(first.path, "/poll");
  assert.equal(first.param("timeout"), "0"); // the first poll proves the technique at once
  first.respond(200, { events: [], cursor: "e1.4" }, { "Tidings-Cursor": "e1.4" });
  await clock.advance(0);
  assert.equal(client.transport, "long_poll");
  assert.deepEqual(events.at(-1), ["connected", "long_poll"]);
  assert.equal(requests.length, 3);
  assert.equal(requests[2].param("timeout"), "25");
  assert.equal(requests[2].param("since"), "e1.4");
});

test("firstByteTimeout is configurable", async () => {
  const { client, clock, requests } = setup({ transports: ["sse", "poll"], firstByteTimeout: 1500 });
  client.subscribe("news");
  await settle();
  requests[0].stream();
  await clock.advance(1500);
  assert.equal(requests.length, 2);
  assert.equal(requests[1].path, "/poll");
});

test("long polling that cannot reach the server moves down to short polling", async () => {
  const { client, clock, requests } = setup({ transports: ["long_poll", "poll"] });
  client.subscribe("news");
  await settle();
  requests[0].fail();
  await clock.advance(0);
  assert.equal(requests.length, 2);
  requests[1].respond(200, { events: [], cursor: "e1.4" }, { ETag: '"e1.4"' });
  await settle();
  assert.equal(client.transport, "poll");
  assert.deepEqual(clock.delays, [2000]);
  await clock.advance(2000);
  assert.equal(requests.length, 3);
  assert.equal(requests[2].param("since"), "e1.4");
  assert.equal(requests[2].param("timeout"), "0");
  assert.equal(requests[2].header("If-None-Match"), '"e1.4"');
});

test("when nothing opens, the ladder starts again from the top after a backoff", async () => {
  const { client, clock, sockets, requests, events } = setup();
  client.subscribe("news");
  await settle();
  sockets[0].refuse();
  await clock.advance(0);
  requests[0].fail();
  await clock.advance(0);
  requests[1].fail();
  await clock.advance(0);
  requests[2].fail();
  await settle();
  assert.deepEqual(
    requests.map((request) => [request.path, request.param("timeout")]),
    [["/sse", null], ["/poll", "0"], ["/poll", "0"]],
  );
  assert.deepEqual(clock.delays, [250]); // random 0.5 times the first bound, 500 ms
  assert.deepEqual(
    events.map((event) => event.join(" ")),
    ["connecting websocket", "connecting sse", "connecting long_poll", "connecting poll"],
  );
  await clock.advance(250);
  assert.equal(sockets.length, 2);
});

test("transports restricts and reorders the ladder", async () => {
  const { client, clock, sockets, requests } = setup({ transports: ["long_poll", "sse"] });
  client.subscribe("news");
  await settle();
  assert.equal(requests[0].path, "/poll");
  requests[0].fail();
  await clock.advance(0);
  assert.equal(requests[1].path, "/sse");
  requests[1].fail();
  await clock.advance(250);
  assert.equal(requests[2].path, "/poll");
  assert.equal(sockets.length, 0);
});

test("an unknown transport is refused", () => {
  assert.throws(() => new Tidings(BASE, { transports: ["websocket", "carrier-pigeon"] }), {
    name: "TypeError",
    message: "unknown transport carrier-pigeon: use websocket,sse,long_poll,poll",
  });
});

test("a remembered technique is where the next client starts", async () => {
  const storage = fakeStorage({ [KEY]: "long_poll" });
  const { client, sockets, requests } = setup({ storage });
  client.subscribe("news");
  await settle();
  assert.equal(sockets.length, 0);
  assert.equal(requests[0].path, "/poll");
});

test("without storage, what worked is remembered in memory", async () => {
  const url = "http://memory.test";
  const first = setup({ storage: null, url });
  first.client.subscribe("news");
  await settle();
  first.sockets[0].refuse();
  await first.clock.advance(0);
  first.requests[0].stream().push("retry: 2000\n");
  await settle();
  assert.equal(first.client.transport, "sse");
  first.client.close();
  const second = setup({ storage: null, url });
  second.client.subscribe("news");
  await settle();
  assert.equal(second.sockets.length, 0);
  assert.equal(second.requests[0].path, "/sse");
});

test("a technique that worked is retried in place before the client moves down", async () => {
  const { client, clock, sockets, requests, events } = setup();
  client.subscribe("news");
  await settle();
  sockets[0].open();
  sockets[0].drop(1006);
  assert.deepEqual(events.at(-1), ["disconnected", "WebSocket closed with 1006", 250]);
  await clock.advance(250);
  sockets[1].refuse(); // the server is restarting
  assert.deepEqual(clock.delays, [500]);
  await clock.advance(500);
  sockets[2].refuse();
  assert.deepEqual(clock.delays, [1000]);
  await clock.advance(1000);
  assert.equal(requests.length, 0);
  sockets[3].refuse(); // the third refusal in a row: maybe the network changed
  assert.deepEqual(clock.delays, [0]);
  await clock.advance(0);
  assert.equal(requests[0].path, "/sse");
});

test("a WebSocket-only client connects without any subscription; HTTP ones wait for one", async () => {
  const ws = setup();
  await settle();
  assert.equal(ws.sockets.length, 1);
  const http = setup({ transports: ["sse"] });
  await settle();
  assert.equal(http.requests.length, 0);
  assert.equal(http.client.transport, null);
  http.client.subscribe("news");
  await settle();
  assert.equal(http.requests.length, 1);
});
