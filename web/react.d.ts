import type { Client, Job, JobStatus, Presence, PresenceOptions } from "./beamline";

export interface JobState {
  /** The job's status, or "connecting" until the first snapshot arrives, or "error" if it cannot be watched. */
  status: JobStatus | "connecting" | "error" | "idle";
  /** 0–100 */
  progress: number;
  /** The job's error, or the reason it cannot be watched ("not_found", "unauthorized"). */
  error: string | null;
  job: Job | null;
}

/** Minimal part of React the hook uses (pass your app's React). */
export interface ReactLike {
  useState: any;
  useEffect: any;
}

export function createUseJob(React: ReactLike, client: Client): (id: string | null | undefined) => JobState;
export function useJob(id: string | null | undefined, deps: { client: Client; React: ReactLike }): JobState;

/** Returns a usePresence(topic, opts) hook bound to one client: the topic's presence list, [] until joined. */
export function createUsePresence(React: ReactLike, client: Client): (topic: string | null | undefined, opts?: PresenceOptions) => Presence[];
export function usePresence(topic: string | null | undefined, deps: { client: Client; React: ReactLike }, opts?: PresenceOptions): Presence[];
