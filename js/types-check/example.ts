// A typed use of the published package: `tsc --noEmit --strict` checks it against tidings.d.ts
// (tests/e2e/test_js_package.py, on the tarball `npm pack` makes). Each @ts-expect-error is a
// misuse the declarations must refuse.

import { Tidings, TidingsError } from "tidings-client";
import type {
  Cursor,
  Json,
  PresenceChange,
  PresenceClient,
  State,
  Subscription,
  TidingsEvent,
  TidingsOptions,
  TidingsReset,
  Transport,
} from "tidings-client";

interface ChatMessage {
  text: string;
  from: string;
}

const options: TidingsOptions = {
  token: async () => "a token",
  transports: ["websocket", "sse"],
  share: true,
  resume: "session",
  minDelay: 250,
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  fetch: globalThis.fetch,
  WebSocket: globalThis.WebSocket,
  storage: globalThis.sessionStorage,
  window: globalThis.window,
};
const tidings = new Tidings("https://rt.example.com", options);
new Tidings("", { token: "a token", worker: new URL("https://example.com/tidings.js") });

const stopListening: () => void = tidings.on("connected", (transport: Transport) => {
  console.log("live over", transport);
});
tidings.on("disconnected", (reason: string, retryIn: number | null) => console.log(reason, retryIn));
tidings.on("error", (error: TidingsError) => console.warn(error.code, error.message));
stopListening();

const chat: Subscription = tidings.subscribe<ChatMessage>("chat:lobby", {
  since: "k3x9.42",
  onEvent: (event: TidingsEvent<ChatMessage>) => console.log(event.data.from, event.data.text, event.ts),
  onReset: ({ id, reason }: TidingsReset) => console.log("reload from", id, reason),
  onError: (error) => console.warn(error instanceof TidingsError && error.code),
});
const cursor: Cursor | null = chat.cursor;
chat.close();

tidings.subscribe("news", {
  onEvent: ({ data }) => {
    const json: Json = data; // without a type argument, data is JSON
    return json;
  },
});

tidings.subscribe("chat:lobby", {
  rewind: 20,
  onPresence: ({ op, client }: PresenceChange) => console.log(op, client.sub, client.info),
});
async function here(): Promise<PresenceClient[]> {
  return tidings.presence("chat:lobby");
}

async function send(): Promise<Cursor> {
  return tidings.publish("chat:lobby", { text: "hi" }, { event: "message", idempotencyKey: "k1" });
}

const state: State = tidings.state;
const transport: Transport | null = tidings.transport;
console.log(cursor, state, transport, send, here);
tidings.close();

// @ts-expect-error: a channel is a string
tidings.subscribe(42);
// @ts-expect-error: no such technique
new Tidings("", { transports: ["carrier-pigeon"] });
// @ts-expect-error: resume knows only "session"
new Tidings("", { resume: "forever" });
// @ts-expect-error: no such event
tidings.on("message", () => {});
// @ts-expect-error: "connected" carries the technique, not a number
tidings.on("connected", (transport: number) => transport);
// @ts-expect-error: the state is read-only
tidings.state = "closed";
// @ts-expect-error: a subscription's events carry the declared data
tidings.subscribe<ChatMessage>("chat:lobby", { onEvent: ({ data }) => data.missing });
// @ts-expect-error: publish resolves with a cursor, not a number
const wrong: Promise<number> = tidings.publish("news", 1);
console.log(wrong);
