// Types for beamline.js, the browser client of Beamline's notifier and ingest API.

export type JobStatus =
  | "scheduled" | "queued" | "running" | "retrying"
  | "succeeded" | "failed" | "dead" | "cancelled" | "expired";

export type Priority = "high" | "normal" | "low";

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
  result?: unknown;
  error?: string;
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
  /** Default 30000. */
  heartbeatMs?: number;
  /** Default 10000. */
  joinTimeoutMs?: number;
  /** Delay before reconnect attempt n (1-based). Default: exponential 100 ms…5 s with jitter. */
  reconnectAfterMs?: (attempt: number) => number;
  /** WebSocket constructor (e.g. the `ws` package in Node). Default globalThis.WebSocket. */
  WebSocket?: unknown;
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
