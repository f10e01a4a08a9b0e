// Types for beamline.js, the browser client of Beamline's notifier and ingest API.

export type JobStatus =
  | "scheduled" | "queued" | "running" | "retrying"
  | "succeeded" | "failed" | "dead" | "cancelled" | "expired";

export type Priority = "high" | "normal" | "low";

/**
 * A stored output, as a result names it once kept (docs/design.md#outputs):
 * `url` needs the bearer token; GET `${url}/link` returns a signed URL for <img>/<video>.
 */
export interface Output {
  /** "0.png", "1.mp4", … */
  output: string;
  /** /v1/jobs/{id}/outputs/{output} */
  url: string;
  content_type: string;
  size: number;
  /** "SHA-256=<base64url>", the served ETag. */
  digest: string;
}

/** A running job's latest intermediate output (docs/design.md#live-previews). */
export interface Preview extends Output {
  /** Always "preview": each newer preview replaces the previous one. */
  output: "preview";
  /** A short-lived URL that needs no Authorization header (for <img src>); absent when the processor cannot sign. */
  signed_url?: string;
  /** When signed_url stops working (RFC 3339). */
  expires_at?: string;
}

/** A job's state, as returned by ingest and pushed by the notifier. */
export interface Job {
  id: string;
  user: string;
  kind: string;
  priority: Priority;
  status: JobStatus;
  /** 0–100 */
  progress: number;
  attempt: number;
  /** The provider's result; stored outputs appear in it as Output objects. */
  result?: unknown;
  error?: string;
  /** While running: the newest live preview, named by progress events. Cleared by success and by a new attempt. */
  preview?: Preview;
  /** Monotonic per job; every update carries a larger one. */
  seq: number;
  created_at: string;
  updated_at: string;
  /** When a scheduled job is due (status "scheduled" only). */
  run_at?: string;
  /** The job this one reruns. */
  rerun_of?: string;
}

/** The query of GET /v1/jobs. */
export interface ListQuery {
  status?: JobStatus;
  kind?: string;
  /** 1–500, default 50. */
  limit?: number;
  /** The next_cursor of the previous page. */
  cursor?: string;
  /** Admin tokens only. */
  user?: string;
}

/** A page of GET /v1/jobs. */
export interface JobPage {
  jobs: Job[];
  next_cursor?: string;
}

/** Why a callback ran. */
export interface UpdateInfo {
  /** "snapshot" (join reply or HTTP read), "submitted", or the event type. */
  type: "snapshot" | "submitted" | "started" | "progress" | "retrying"
    | "succeeded" | "failed" | "dead" | "cancelled" | "expired";
  seq: number;
  /** On a snapshot after a rejoin: whether missed events were replayed. */
  recovered?: boolean;
  streamSeq?: number;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "recovered" | "closed";

export interface StatusInfo {
  /** WebSocket close code that caused a "reconnecting". */
  code?: number;
  reason?: string;
  attempt?: number;
  /** On "recovered": true when every topic replayed what was missed. */
  resumed?: boolean;
}

export interface ConnectOptions {
  /** Socket endpoint, e.g. "/socket" or "wss://notify.example.com/socket". Default: same origin "/socket". */
  url?: string;
  /** A bearer JWT. Prefer getToken in production. */
  token?: string;
  /** Called before every (re)connect and request, so tokens can be refreshed. */
  getToken?: () => string | Promise<string>;
  /** Base URL of ingest for submit/cancel/getJob. Default "" (same origin, /v1/jobs). */
  ingestURL?: string;
  /** User id for watchUser; default: the token's `sub`. */
  user?: string;
  /** Heartbeat interval; a heartbeat unanswered for as long closes and reconnects. Default 30000. */
  heartbeatMs?: number;
  /** Join and push reply timeout. Default 10000. */
  joinTimeoutMs?: number;
  /** Delay before reconnect attempt n (1-based). Default: exponential 100 ms…5 s with jitter. */
  reconnectAfterMs?: (attempt: number) => number;
  /** WebSocket constructor (e.g. the `ws` package in Node). Default globalThis.WebSocket; without one, long-poll. */
  WebSocket?: unknown;
  /** "longpoll" forces Phoenix long-poll (/socket/longpoll) from the start. */
  transport?: "websocket" | "longpoll";
  /**
   * Fall back to long-poll when a WebSocket has not proved itself (opened and answered a
   * heartbeat) within this many ms, or failed before opening; the fallback is remembered in
   * sessionStorage. Default 2500 in a browser, 0 (off) elsewhere or when WebSocket is given.
   */
  longPollFallbackMs?: number;
  /** The official Socket's logger: (kind, msg, data) => void. */
  logger?: (kind: string, msg: string, data?: unknown) => void;
  /** fetch implementation. Default globalThis.fetch. */
  fetch?: typeof fetch;
}

export interface WatchOptions {
  /** Join refused: "unauthorized", "not_found", … Permanent reasons stop retrying. */
  onError?: (reason: string) => void;
}

export interface SubmitBody {
  kind: string;
  priority?: Priority;
  input?: Record<string, unknown>;
}

export interface RequestOptions {
  idempotencyKey?: string;
  signal?: AbortSignal;
}

/** Metrics pushed on admin:metrics. Any field may be missing. */
export interface Metrics {
  at?: string;
  queue_depth?: Partial<Record<Priority, number>>;
  inflight?: number;
  jobs_per_second?: { succeeded?: number; failed?: number; retried?: number; dead?: number };
  breakers?: Record<string, "closed" | "open" | "half-open" | string>;
  supervisor_restarts?: number;
  dlq?: number;
  notifier_connections?: number;
  [key: string]: unknown;
}

export type Unsubscribe = () => void;

/** One connection's presence on a topic (docs/phoenix-protocol.md §8). */
export interface PresenceMeta {
  phx_ref: string;
  /** Set when the meta replaced an earlier one of the same connection. */
  phx_ref_prev?: string;
  /** Unix milliseconds. */
  online_at: number;
  device: string;
  /** The client-set meta (a JSON object of at most 256 bytes). */
  meta?: Record<string, unknown>;
}

/** A user on a topic ("guest" for share-token holders), one meta per connection. */
export interface Presence {
  key: string;
  metas: PresenceMeta[];
}

export interface PresenceOptions {
  /** Shown to the others (≤ 32 bytes); default "web". */
  device?: string;
  meta?: Record<string, unknown>;
  onJoin?: (key: string, current: { metas: PresenceMeta[] } | undefined, joined: { metas: PresenceMeta[] }) => void;
  onLeave?: (key: string, current: { metas: PresenceMeta[] }, left: { metas: PresenceMeta[] }) => void;
  /** A refused join: "unauthorized", "invalid room name: …", "presence meta too large", … */
  onError?: (reason: string) => void;
}

/** A studio room message: the server sets from to the sender's user id. */
export interface RoomMessage {
  from: string;
  body: Record<string, unknown>;
}

export interface Studio {
  /** Broadcast to the room (a JSON object ≤ 1 KiB, 5 a second); rejects with BeamlineError (code = the reason). */
  send(body: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Replace this connection's presence meta. */
  setMeta(meta: Record<string, unknown>): Promise<Record<string, unknown>>;
  leave(): void;
}

export interface Client {
  /** Watch one job. The callback gets every newer state exactly once, in order. */
  watchJob(id: string, onUpdate: (job: Job, info: UpdateInfo) => void, opts?: WatchOptions): Unsubscribe;
  /** Watch all of the token user's jobs (starting with the unfinished ones). */
  watchUser(onUpdate: (job: Job, info: UpdateInfo) => void, opts?: WatchOptions & {
    user?: string;
    includeFinished?: boolean;
    /**
     * Called when a join's list of the user's jobs was cut short (the notifier reads at most
     * 10,000 jobs, for at most 3 s): it holds the most recent ones; read older ones with getJob.
     * Live updates of every job still arrive.
     */
    onTruncated?: () => void;
  }): Unsubscribe;
  /** Who is on a studio: or job: topic; onSync gets the whole list after every change. */
  presence(topic: string, onSync: (list: Presence[]) => void, opts?: PresenceOptions): Unsubscribe;
  /** Join studio:<room> (the token's rooms claim must name it): presence and messages. */
  studio(room: string, opts?: PresenceOptions & {
    onSync?: (list: Presence[]) => void;
    onMessage?: (m: RoomMessage) => void;
  }): Studio;
  /** Live pipeline figures (admin tokens only). */
  watchMetrics(onMetrics: (m: Metrics) => void, opts?: WatchOptions): Unsubscribe;
  /** POST /v1/jobs. Resolves with the queued snapshot; rejects with BeamlineError. */
  submit(body: SubmitBody, opts?: RequestOptions): Promise<Job>;
  /** DELETE /v1/jobs/{id}. */
  cancel(id: string, opts?: RequestOptions): Promise<Job>;
  /** GET /v1/jobs/{id}. */
  getJob(id: string, opts?: RequestOptions): Promise<Job>;
  /** GET /v1/jobs: the caller's jobs, newest first, a page at a time. */
  listJobs(query?: ListQuery, opts?: RequestOptions): Promise<JobPage>;
  /** Connection state changes; called at once with the current state. */
  onStatus(cb: (state: ConnectionState, info: StatusInfo) => void): Unsubscribe;
  /** Leave every topic and close for good. */
  close(): void;
  readonly status: ConnectionState;
  /** The transport in use: "longpoll" after a fallback or without WebSocket. */
  readonly transport: "websocket" | "longpoll";
}

export function connect(opts?: ConnectOptions): Client;

export class BeamlineError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter?: number;
}

export const TERMINAL: readonly JobStatus[];
export function isTerminal(status: JobStatus | string): boolean;
export function tokenSubject(token: string): string | undefined;
export function defaultBackoff(attempt: number): number;
export function presenceList(state: Record<string, { metas: PresenceMeta[] }>): Presence[];
