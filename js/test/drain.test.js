// A draining server (docs/protocol.md sections 4-6): each technique comes back after the delay the
// server asked for, or the random one 1012 asks the client to pick, from its last cursor.

import assert from "node:assert/strict";
import test from "node:test";

import { settle, setup } from "../testing/fakes.js";

const event = (id) => ({ channel: "news", id, event: "message", data: id, ts: 1700 });

test("SSE: the drain's retry: after the opening one wins, and the stream resumes", async () => {
  const { client, clock, requests } = setup({ transports: ["sse"], random: () => 0 });
  const seen = [];
  client.subscribe("news", { onEvent: (e) => seen.push(e.id) });
  await settle();
  const stream = requests[0].stream();
  stream.push("retry: 2000\nid: e1.4\n\n");
  stream.push(`id: e1.5\nevent: message\ndata: ${JSON.stringify(event("e1.5"))}\n\n`);
  stream.push("retry: 3700\n\n"); // exactly what the server writes when it drains
  await settle();
  stream.end();
  await settle();
  assert.deepEqual(clock.delays, [3700]);
  await clock.advance(3699);
  assert.equal(requests.length, 1);
  await clock.advance(1);
  assert.equal(requests[1].param("since"), "e1.5");
  assert.deepEqual(seen, ["e1.5"]);
});

test("WebSocket: after 1012 it waits its random pause and resubscribes from its cursor", async () => {
  const { client, clock, sockets } = setup({ random: () => 0.4, drainWindow: 5000 });
  const seen = [];
  client.subscribe("news", { since: "e1.7", onEvent: (e) => seen.push(e.id) });
  await settle();
  sockets[0].open();
  sockets[0].receive({ op: "event", ...event("e1.8") });
  sockets[0].drop(1012, "server restarting: reconnect after a short delay");
  assert.deepEqual(clock.delays, [2000]);
  await clock.advance(1999);
  assert.equal(sockets.length, 1);
  await clock.advance(1);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [{ op: "subscribe", channel: "news", since: "e1.8", ref: 2 }]);
  assert.deepEqual(seen, ["e1.8"]);
});

test("long polling: a held poll answered 204 polls again at once from its cursor", async () => {
  const { client, clock, requests } = setup({ transports: ["long_poll"] });
  client.subscribe("news");
  await settle();
  requests[0].respond(200, { events: [], cursor: "e1.3" });
  await clock.advance(0);
  assert.equal(requests[1].param("timeout"), "25");
  requests[1].respond(204, null, { "Tidings-Cursor": "e1.3", Connection: "close" });
  await clock.advance(0);
  assert.equal(requests.length, 3);
  assert.equal(requests[2].param("since"), "e1.3");
  assert.equal(requests[2].param("timeout"), "25");
});
