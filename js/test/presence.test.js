// Presence over the WebSocket: joins and leaves reach the channel's subscribers, and a
// presence query resolves with who is there.

import assert from "node:assert/strict";
import test from "node:test";

import { settle, setup } from "../testing/fakes.js";

async function connected(options) {
  const fixture = setup(options);
  await settle();
  fixture.sockets[0].open();
  return fixture;
}

test("joins and leaves reach every subscription of their channel, and no other", async () => {
  const { client, sockets } = await connected();
  const seen = [];
  client.subscribe("chat:a", { onPresence: (change) => seen.push(["first", change]) });
  client.subscribe("chat:a", { onPresence: (change) => seen.push(["second", change]) });
  client.subscribe("chat:b", { onPresence: (change) => seen.push(["other", change]) });
  const ann = { sub: "ann", info: { name: "Ann" } };
  sockets[0].receive({ op: "join", channel: "chat:a", client: ann });
  sockets[0].receive({ op: "leave", channel: "chat:a", client: ann });
  assert.deepEqual(seen, [
    ["first", { op: "join", channel: "chat:a", client: ann }],
    ["second", { op: "join", channel: "chat:a", client: ann }],
    ["first", { op: "leave", channel: "chat:a", client: ann }],
    ["second", { op: "leave", channel: "chat:a", client: ann }],
  ]);
});

test("presence asks over the WebSocket and resolves with the clients", async () => {
  const { client, sockets } = await connected();
  const here = client.presence("chat:a");
  assert.deepEqual(sockets[0].sent.at(-1), { op: "presence", channel: "chat:a", ref: 1 });
  const clients = [{ sub: "ann", info: null }, { sub: null, info: null }];
  sockets[0].receive({ op: "presence", ref: 1, channel: "chat:a", clients });
  assert.deepEqual(await here, clients);
});

test("presence rejects with the server's error, and at once without a WebSocket", async () => {
  const { client, sockets } = await connected();
  const refused = client.presence("news");
  sockets[0].receive({ op: "error", ref: 1, code: "presence_disabled", message: "off" });
  await assert.rejects(refused, { name: "TidingsError", code: "presence_disabled" });
  const { client: streaming } = setup({ transports: ["sse"] });
  await assert.rejects(streaming.presence("chat:a"), { code: "not_connected" });
});
