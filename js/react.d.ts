/**
 * `fleetgate/react`: a provider and hooks (React ≥ 18) over a `fleetgate/sync` client or a
 * fixed engine, re-rendering on every applied delta.
 * @module fleetgate/react
 */
// Types of fleetgate/react: hooks over a PolicyEngine kept by fleetgate/sync or a fixed one.
import type { ReactElement, ReactNode } from "react";
import type { Action, Command, Decision, PolicyEngine } from "./index.js";
import type { SyncStatus } from "./sync.js";

/** What the provider follows: a fleetgate/sync client, or anything with `engine` and `subscribe`. */
export interface FleetgateSource {
  /** The engine to read now (null: none yet). Read on every change; never kept by the hooks. */
  readonly engine: PolicyEngine | null;
  /** Calls `listener()` after every change of `engine` or its state; returns the unsubscribe. */
  subscribe(listener: () => void): () => void;
  readonly pending?: boolean;
  readonly status?: SyncStatus;
}

export type FleetgateProviderProps =
  | { sync: FleetgateSource; engine?: undefined; children?: ReactNode }
  | { engine: PolicyEngine | null; sync?: undefined; children?: ReactNode };

/** Gives its children the engine of `sync` (re-rendering them on every applied delta) or a fixed `engine`. */
export function FleetgateProvider(props: FleetgateProviderProps): ReactElement;

/** Whether `user` may `action` (default "view") `device`; false without an engine. */
export function useCan(user: string, device: string, action?: Action): boolean;

/** The decision of a check with its code and reason; null without an engine. */
export function useExplain(user: string, device: string, action?: Action): Decision | null;

/** `visibleDevices(user, options)` (ascending ids); [] without an engine. Throws NOT_SWITCHABLE like the engine. */
export function useVisibleDevices(user: string, options?: { action?: Action; activeOrg?: string }): readonly string[];

/** The decision of a §5 command (for a greyed-out button and its reason); null without an engine or command. */
export function useDecision(actor: string, command: Command | null | undefined): Decision | null;

/** The provider's state. Use `engine` during render only: a reload replaces (and frees) it. */
export function useFleetgate(): { engine: PolicyEngine | null; revision: number | null; pending: boolean; status: SyncStatus };
