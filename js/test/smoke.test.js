// Against a real server, run by hand (skipped unless TIDINGS_URL is set):
//
//   TIDINGS_NAMESPACES_SMOKE_CLIENT_PUBLISH=true .venv/bin/tidings serve --port 8123 &
//   cd js && TIDINGS_URL=http://127.0.0.1:8123 npm run smoke
//
// Node 20 needs --experimental-websocket for a global WebSocket (the smoke script passes it).

import assert from "node:assert/strict";
import test from "node:test";

import { Tidings } from "../tidings.js";

const URL = process.env.TIDINGS_URL;
const skip = URL ? false : "set TIDINGS_URL to run against a real server";
const run = Math.random().toString(36).slice(2, 8);

async function publish(channel, data) {
  const response = await fetch(URL + "/api/publish", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).id;
}

function client(transport, options = {}) {
  return new Tidings(URL, { transports: [transport], storage: null, interval: 200, ...options });
}

const connected = (tidings) =>
  new Promise((resolve) => tidings.state === "connected" ? resolve() : tidings.on("connected", resolve));

/** Subscribe; each call of next() waits for the next event, with a timeout. */
function inbox(tidings, channel, options = {}) {
  const queue = [];
  const waiters = [];
  const sub = tidings.subscribe(channel, {
    ...options,
    onEvent: (event) => (waiters.length ? waiters.shift()(event) : queue.push(event)),
  });
  const next = () =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no event on ${channel}`)), 5000);
          waiters.push((event) => (clearTimeout(timer), resolve(event)));
        });
  return { sub, next };
}

for (const transport of ["websocket", "sse", "long_poll", "poll"]) {
  test(`${transport}: events arrive, and a new client resumes from a cursor`, { skip }, async () => {
    const channel = `smoke-${transport}-${run}`;
    const first = client(transport);
    const one = inbox(first, channel);
    await connected(first);
    assert.equal(first.transport, transport);
    // the subscription is live once the server has told the client where the channel is
    for (let turn = 0; !one.sub.cursor && turn < 100; turn++) await new Promise((r) => setTimeout(r, 20));
    const id = await publish(channel, { n: 1 });
    const event = await one.next();
    assert.deepEqual({ ...event, ts: 0 }, { channel, id, event: "message", data: { n: 1 }, ts: 0 });
    first.close();
    const second = client(transport);
    const two = inbox(second, channel, { since: id });
    const later = [await publish(channel, { n: 2 }), await publish(channel, { n: 3 })];
    assert.deepEqual([(await two.next()).id, (await two.next()).id], later);
    second.close();
  });
}

test("websocket: publish resolves with the cursor, or rejects with the server's code", { skip }, async () => {
  const tidings = client("websocket");
  await connected(tidings);
  const id = await tidings.publish(`smoke:${run}`, { hello: "world" });
  assert.match(id, /^[A-Za-z0-9]+\.1$/);
  await assert.rejects(tidings.publish(`closed-${run}`, 1), { code: "forbidden" });
  tidings.close();
});

test("sse with several channels: one stream, each event tagged with its channel", { skip }, async () => {
  const tidings = client("sse");
  const a = inbox(tidings, `multi-a-${run}`);
  const b = inbox(tidings, `multi-b-${run}`);
  await connected(tidings);
  for (let turn = 0; !(a.sub.cursor && b.sub.cursor) && turn < 100; turn++)
    await new Promise((r) => setTimeout(r, 20));
  await publish(`multi-b-${run}`, "to b");
  await publish(`multi-a-${run}`, "to a");
  assert.equal((await a.next()).data, "to a");
  assert.equal((await b.next()).data, "to b");
  tidings.close();
});

for (const transport of ["websocket", "sse", "long_poll", "poll"]) {
  test(`${transport}: rewind starts with the last events, then goes live`, { skip }, async () => {
    const channel = `smoke-rewind-${transport}-${run}`;
    const old = [await publish(channel, 1), await publish(channel, 2), await publish(channel, 3)];
    const tidings = client(transport);
    const box = inbox(tidings, channel, { rewind: 2 });
    assert.deepEqual([(await box.next()).id, (await box.next()).id], old.slice(1));
    const live = await publish(channel, 4);
    assert.equal((await box.next()).id, live);
    tidings.close();
  });
}
