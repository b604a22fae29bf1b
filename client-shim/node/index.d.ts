// Type declarations for @birdfeeder/client (ESM: index.d.ts; CommonJS:
// index.d.cts, which must stay identical: test/package.test.mjs checks).
/// <reference types="node" />
import type { IncomingMessage, ServerResponse } from 'node:http';

export type Dataset = 'image_events' | 'llm_events';

/** Milliseconds since the Unix epoch (UTC), or a Date. */
export type Timestamp = number | bigint | Date;
/** A non-negative integer (a fraction is rounded), or its decimal text. */
export type Uint = number | bigint | string;

/** OpenAI-style token usage (Chat Completions or Responses API). */
export interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number } | null;
  input_tokens?: number;
  output_tokens?: number;
  input_tokens_details?: { cached_tokens?: number } | null;
  [key: string]: unknown;
}

/** Fields of both datasets (proto/fields.def). null / undefined = absent. */
export interface CommonFields {
  /** Request id, at most 64 bytes; the daemon makes one when absent. */
  id?: string | null;
  user_id?: string | number | null;
  username?: string | null;
  tier?: string | null;
  /** Required by the daemon (not empty). */
  model?: string | null;
  start_time?: Timestamp | null;
  end_time?: Timestamp | null;
  duration_ms?: Uint | null;
  /** 'success' | 'error'; the daemon derives it from error_message when absent. */
  status?: 'success' | 'error' | '' | null;
  /** Cut to 500 characters before sending. */
  error_message?: string | null;
  cached?: boolean | 0 | 1 | null;
  /** Cut to its origin by the daemon. */
  referrer?: string | null;
  /** The client's address; the daemon anonymises and hashes it. */
  ip?: string | null;
  prompt_tokens?: Uint | null;
  completion_tokens?: Uint | null;

  // Aliases, used when the field's own name is absent.
  /** = user_id */
  userId?: string | number | null;
  /** = user_id */
  user?: string | number | null;
  /** = start_time */
  startTime?: Timestamp | null;
  /** = end_time */
  endTime?: Timestamp | null;
  /** = duration_ms */
  durationMs?: Uint | null;
  /** = duration_ms */
  duration?: Uint | null;
  /** = error_message */
  errorMessage?: string | null;
  /** = error_message (an Error gives its message) */
  error?: string | Error | { message: string } | null;
  /** = prompt_tokens */
  promptTokens?: Uint | null;
  /** = completion_tokens */
  completionTokens?: Uint | null;
  /** = referrer */
  referer?: string | null;
  /** Token counts when not given directly. */
  usage?: Usage | null;
  // No other keys: a typo ("widht") or a column the daemon computes
  // (provider, cost_usd) is a compile error under --strict, as it would
  // never reach Tinybird. At run time such keys are ignored.
}

export interface ImageFields extends CommonFields {
  /** Cut to 120 characters before sending. */
  prompt?: string | null;
  width?: Uint | null;
  height?: Uint | null;
  steps?: Uint | null;
}

export interface LlmFields extends CommonFields {
  cached_tokens?: Uint | null;
  /** = cached_tokens */
  cachedTokens?: Uint | null;
  stream?: boolean | 0 | 1 | null;
}

export type EventFields = ImageFields & LlmFields;

export interface ClientOptions {
  /** Numeric IPv4 or IPv6 address, or 'localhost'. Default 127.0.0.1. */
  host?: string;
  /** Default 8190. */
  port?: number | string;
  /** 'HOST:PORT' or '[IPv6]:PORT', instead of host and port. Default:
   * $BIRDFEEDER_ADDR, else 127.0.0.1:8190. */
  addr?: string;
  /** Largest datagram sent (64..65507); default 8192, the daemon's limit. */
  maxDatagram?: number;
  /** prompt is cut to this many characters; default 120; 0: no cut. */
  promptChars?: number;
  /** error_message is cut to this many characters; default 500; 0: no cut. */
  errorChars?: number;
}

export interface ClientStats {
  /** Handed to the kernel and not reported refused. */
  sent: number;
  /** Not taken: no daemon listening (ECONNREFUSED), socket buffer full. */
  dropped: number;
  /** Did not fit maxDatagram after the cuts: not sent. */
  oversize: number;
  /** Could not be sent: not an object, unknown dataset, closed client,
   * bad address, a getter that threw, any other socket error. */
  failed: number;
}

export declare class Client {
  /** Same as createClient(options). */
  constructor(options?: ClientOptions);
  /** Why this client cannot send (bad address, socket error), or null. */
  readonly error: Error | null;
  /** 'host:port' it sends to, or null. */
  readonly address: string | null;
  /** Send one image_events event. true: handed to the socket; false:
   * counted at once as oversize or failed. Never throws. */
  image(fields: ImageFields): boolean;
  /** Send one llm_events event. */
  llm(fields: LlmFields): boolean;
  /** Send one event of any dataset (a name, or an id 1..255). */
  send(dataset: Dataset | number, fields: EventFields): boolean;
  /** Counters since creation; each send adds one to exactly one of them
   * once dgram has called back (by the next tick). */
  stats(): ClientStats;
  /** Close the socket; later sends count as failed. Idempotent. */
  close(): void;
}

/** A client for the daemon (see ClientOptions). Never throws: with a bad
 * address it warns, sets client.error, and counts every event as failed. */
export declare function createClient(options?: ClientOptions): Client;

/** The process-wide client from $BIRDFEEDER_ADDR, created on first use. */
export declare function getDefaultClient(): Client;

/** Drop-in for the original plan's sendTinybirdEvent(event, { dataset }),
 * through the default client. Returns nothing; never throws. */
export declare function sendTinybirdEvent(
  event: EventFields,
  options?: { dataset?: Dataset | number },
): void;

/** Auth result of the service, for user_id / username / tier. */
export interface AuthResult {
  userId?: string | number | null;
  user_id?: string | number | null;
  username?: string | null;
  tier?: string | null;
  [key: string]: unknown;
}

/** What a service hands over per request (annotate, res.locals.birdfeeder). */
export interface Annotation extends EventFields {
  auth?: AuthResult | null;
  dataset?: Dataset | number;
  /** true: send no event for this request. */
  skip?: boolean;
}

type Req = IncomingMessage | { headers?: unknown; socket?: unknown; [key: string]: unknown };
type Res = ServerResponse | { on: (...args: any[]) => unknown; [key: string]: unknown };

export interface MiddlewareOptions {
  /** Default: getDefaultClient(). */
  client?: Client;
  /** Default 'image_events'. */
  dataset?: Dataset | number;
  /** Model when the request named none; default 'unknown'. */
  model?: string;
  /** false (default): IP from the socket. true: first X-Forwarded-For
   * entry. N: the entry N trusted proxies back. */
  trustProxy?: boolean | number;
  /** Header read with trustProxy; default 'x-forwarded-for'. */
  ipHeader?: string;
  auth?: (req: any, res: any) => AuthResult | null | undefined;
  /** Event id (at most 64 bytes; else the daemon makes one). */
  requestId?: (req: any, res: any) => string | null | undefined;
  /** Extra fields, read when the response ends. */
  fields?: (req: any, res: any) => Annotation | null | undefined;
  onError?: (err: unknown) => void;
}

/** Starts the clock; sends one event when the response finishes or fails.
 * Call it first in a node:http handler, or mount it in Express. */
export type Middleware = (req: Req, res: Res, next?: (err?: unknown) => void) => void;

export declare function middleware(options?: MiddlewareOptions): Middleware;
/** Merge fields into the tracked request's event; false when untracked. */
export declare function annotate(target: Req | Res, fields: Annotation): boolean;
/** Send no event for this request; false when untracked. */
export declare function skip(target: Req | Res): boolean;

export interface EncodeOptions {
  maxDatagram?: number;
  promptChars?: number;
  errorChars?: number;
}

/** The canonical protocol v1 datagram for an event, or null (unknown
 * dataset, not an object, too large). No cuts unless asked. */
export declare function encode(
  dataset: Dataset | number,
  event: EventFields,
  options?: EncodeOptions,
): Buffer | null;

/** Dataset id for a name or id; 0 when unknown. */
export declare function datasetId(dataset: unknown): number;
/** The first max code points of s (never splits a surrogate pair). */
export declare function cutChars(s: string, max: number): string;
export declare function parseAddr(
  addr: string,
): { host: string; port: number; family: 4 | 6 } | Error;

export interface ProtocolField {
  tag: number;
  name: string;
  type: 'string' | 'uint64' | 'bool';
  wire_type: number;
  max: number;
  datasets: Dataset[];
}

/** The protocol table (python3 proto/gen_doc.py --json). */
export declare const PROTOCOL: {
  protocol_version: number;
  magic: string;
  header_length: number;
  datasets: { id: number; name: Dataset }[];
  fields: ProtocolField[];
  reasons: { name: string; description: string }[];
};
export declare const ALIASES: Readonly<Record<string, readonly string[]>>;
export declare const DEFAULT_ADDR: string;
export declare const MAX_DATAGRAM: number;
export declare const PROMPT_CHARS: number;
export declare const ERROR_CHARS: number;

declare const birdfeeder: {
  createClient: typeof createClient;
  getDefaultClient: typeof getDefaultClient;
  sendTinybirdEvent: typeof sendTinybirdEvent;
  middleware: typeof middleware;
  annotate: typeof annotate;
  skip: typeof skip;
  encode: typeof encode;
  datasetId: typeof datasetId;
  cutChars: typeof cutChars;
  parseAddr: typeof parseAddr;
  Client: typeof Client;
  PROTOCOL: typeof PROTOCOL;
  ALIASES: typeof ALIASES;
  DEFAULT_ADDR: string;
  MAX_DATAGRAM: number;
  PROMPT_CHARS: number;
  ERROR_CHARS: number;
};
export default birdfeeder;
