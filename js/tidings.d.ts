// Types of tidings.js, the browser client of Tidings (wire protocol version 1).

/** A technique of the ladder, from the most capable down. */
export type Transport = "websocket" | "sse" | "long_poll" | "poll";

/** The life of a client. */
export type State = "connecting" | "connected" | "disconnected" | "closed";

/** A JSON value, as an event's `data` is. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** `<epoch>.<offset>`: a position in a channel, as the server gives it. */
export type Cursor = string;

/** An event of a channel. */
export interface TidingsEvent<Data = Json> {
  channel: string;
  id: Cursor;
  /** The event's name (`message` unless the publisher named it). */
  event: string;
  data: Data;
  /** The server's publish time, Unix milliseconds. */
  ts: number;
}

/** History could not cover a gap: the channel continues from `id`. */
export interface TidingsReset {
  channel: string;
  id: Cursor;
  /** `epoch` (the channel's stream started over) or `gap` (events left history). */
  reason: "epoch" | "gap" | (string & {});
}

/** An error answered by the server (`code` as in the protocol's section 8) or by the client. */
export declare class TidingsError extends Error {
  constructor(code: string, message: string);
  readonly name: "TidingsError";
  /** `forbidden`, `unauthorized`, `not_connected`, `disconnected`, `closed`, `http_<status>`... */
  readonly code: string;
}

export interface SubscribeOptions<Data = Json> {
  /** Resume after this cursor; default: from now (or the saved cursor with `resume`). */
  since?: Cursor;
  /** Without a cursor: start with the channel's last N events (capped by the server). */
  rewind?: number;
  onEvent?: (event: TidingsEvent<Data>) => void;
  onReset?: (reset: TidingsReset) => void;
  /** The server refused the channel: it is not retried. */
  onError?: (error: TidingsError) => void;
  /** Joins and leaves, where the namespace has presence (over a WebSocket, not with `share`). */
  onPresence?: (change: PresenceChange) => void;
}

/** A client in a channel's presence: the `sub` and `info` of its token or hook. */
export interface PresenceClient {
  sub: string | null;
  info: Json;
}

export interface PresenceChange {
  op: "join" | "leave";
  channel: string;
  client: PresenceClient;
}

export interface Subscription {
  readonly channel: string;
  /** The channel's last cursor, worth saving to resume a later page from; null until known. */
  readonly cursor: Cursor | null;
  close(): void;
}

export interface PublishOptions {
  /** The event's name, default `message`. */
  event?: string;
  /** Publishing again with the same key stores the event once. */
  idempotencyKey?: string;
}

/** A token, or where to get one: asked at connect and when the server refuses the token. */
export type TokenSource = string | (() => string | Promise<string>);

/** Storage for the remembered technique and the saved cursors (`sessionStorage` by default). */
export interface TidingsStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface TidingsOptions {
  token?: TokenSource;
  /** The older spelling of a `token` function. */
  getToken?: () => string | Promise<string>;
  /** Renewed tokens refused in a row before the client stops with an error (3). */
  tokenRetries?: number;
  /** The techniques to try, in order (all four). */
  transports?: Transport[];
  /** One connection for every tab of the browser: SharedWorker, else a leading tab (false). */
  share?: boolean;
  /** `"session"`: subscriptions resume from the cursors saved when the page went away. */
  resume?: "session" | null;
  /** The script of the shared worker: this module (default: the URL it was imported from). */
  worker?: string | URL;
  /** Backoff in ms: the first delay bound, doubled per attempt up to `maxDelay` (500, 30000). */
  minDelay?: number;
  maxDelay?: number;
  /** An event stream with no first byte after this many ms is buffered: move down (4000). */
  firstByteTimeout?: number;
  /** A WebSocket handshake or a poll answer later than this many ms has failed (10000). */
  openTimeout?: number;
  /** An event stream silent this many ms is dead (35000). */
  heartbeatTimeout?: number;
  /** WebSocket: ping every `pingInterval` ms, give up after `pongTimeout` ms (20000, 10000). */
  pingInterval?: number;
  pongTimeout?: number;
  /** Seconds the server may hold a long poll (25). */
  pollTimeout?: number;
  /** Short polling period in ms (2000). */
  interval?: number;
  /** After close 1001/1012, come back within this many ms (10000). */
  drainWindow?: number;
  /** Seams, for tests and other runtimes. */
  WebSocket?: new (url: string) => WebSocket;
  fetch?: (input: URL, init?: RequestInit) => Promise<Response>;
  /** A timer id is whatever the runtime's setTimeout returns. */
  setTimeout?: (callback: () => void, ms: number) => any;
  clearTimeout?: (id: any) => void;
  random?: () => number;
  storage?: TidingsStorage;
  /** The target of `online` and `pagehide`, with `document` for `visibilitychange`. */
  window?: EventTarget & {
    document?: EventTarget & { visibilityState?: string };
    location?: { href: string; origin: string };
    navigator?: { locks?: LockManager };
    reportError?: (error: unknown) => void;
  };
}

export interface TidingsEvents {
  connecting: (transport: Transport) => void;
  connected: (transport: Transport) => void;
  /** `retryIn`: ms before the next attempt, or null when the client has stopped. */
  disconnected: (reason: string, retryIn: number | null) => void;
  /** What stopped the client for good (a 4xx, a token refused for good). */
  error: (error: TidingsError) => void;
}

export declare class Tidings {
  /** `url`: `http(s)://host:port`, or a base path of the page's own origin (`""`, `"/rt"`). */
  constructor(url: string, options?: TidingsOptions);
  /** The technique in use or being tried. */
  readonly transport: Transport | null;
  readonly state: State;
  /** Returns a function that removes `listener`. */
  on<Name extends keyof TidingsEvents>(name: Name, listener: TidingsEvents[Name]): () => void;
  subscribe<Data = Json>(channel: string, options?: SubscribeOptions<Data>): Subscription;
  /** Over the WebSocket; resolves with the event's cursor. */
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<Cursor>;
  /** Who is in `channel` now, over the WebSocket (not with `share`). */
  presence(channel: string): Promise<PresenceClient[]>;
  close(): void;
}
