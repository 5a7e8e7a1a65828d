/**
 * `fleetgate/sync`: a PolicyEngine kept equal to the fleetgate server's projection for the
 * signed-in user (snapshot, server-sent deltas, catch-up, reloads).
 * @module fleetgate/sync
 */
// Types of fleetgate/sync: a PolicyEngine kept equal to the server's projection (SPEC §7).
import type { PolicyEngine } from "./index.js";

/** An HTTP or network failure: the server's error code (e.g. `UNAUTHENTICATED`), else `HTTP_<status>` or `NETWORK`. */
export class SyncError extends Error {
  readonly name: "SyncError";
  code: string;
  /** The HTTP status; 0 for a network failure. */
  status: number;
}

export type SyncStatus = "idle" | "loading" | "live" | "reconnecting" | "stopped";

/** What `onUpdate` is told after each change of the engine's state. */
export type SyncUpdate = {
  /** `snapshot`: a (re)loaded projection; `delta`: an applied delta; `activate`: a pending state made visible. */
  reason: "snapshot" | "delta" | "activate";
  /** The visible engine's revision. */
  revision: number | null;
  /** The newest loaded revision (greater than `revision` while `pending`). */
  headRevision: number | null;
  pending: boolean;
};

export type SyncOptions = {
  /** The server's origin, e.g. `https://fleet.example.com`; `""` (default) for the page's own. */
  baseUrl?: string;
  /** The fetch to use (default `globalThis.fetch`). */
  fetch?: typeof fetch;
  /** The bearer token of each request (called per request); none: cookies only. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Default true. When false, updates after the first load stay `pending` until `activate()`. */
  activateOnLoad?: boolean;
  onUpdate?: (update: SyncUpdate) => void;
  /** Every failure (network, HTTP, a delta that did not apply); the client keeps retrying except on 401. */
  onError?: (error: Error) => void;
  /** Reconnect back-off in ms (default 500 → 15000, doubling, ±25% jitter). */
  retry?: { min?: number; max?: number };
  /** Default true: start following at once; else call `start()`. */
  start?: boolean;
};

export interface Sync {
  /** The visible engine; null before the first load. Read it each time: a reload replaces (and frees) it. */
  readonly engine: PolicyEngine | null;
  readonly revision: number | null;
  /** A newer state is loaded but not visible (`activateOnLoad: false`). */
  readonly pending: boolean;
  readonly status: SyncStatus;
  /** Resolves once the first engine is visible. */
  readonly ready: Promise<Sync>;
  /** Called after every change of engine, revision, pending or status; returns the unsubscribe. */
  subscribe(listener: () => void): () => void;
  /** Makes the pending state visible and frees the engine it replaces; false when nothing is pending. */
  activate(): boolean;
  /** Starts or resumes following (catching up from `revision`). */
  start(): void;
  /** Stops following; the engine stays visible. */
  stop(): Promise<void>;
  /** Stops and frees every engine. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export function createSync(options?: SyncOptions): Sync;

declare global {
  interface SymbolConstructor {
    readonly asyncDispose: unique symbol;
  }
}
