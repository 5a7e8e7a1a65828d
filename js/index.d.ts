// Types of the fleetgate package (SPEC §6). The one source of the TypeScript API.

/** A decision with its reason (SPEC §3, §5). */
export type Decision = {
  allowed: boolean;
  code: string;
  org?: string;
  role?: string;
  permission?: string;
};

/** One (user, device, action) access. */
export type Access = { user: string; device: string; action: "view" | "control" };

/** What `preview` returns. `truncated` (with the counts) appears only for very wide changes. */
export type Preview = {
  decision: Decision;
  gained: Access[];
  lost: Access[];
  truncated?: boolean;
  gainedCount?: number;
  lostCount?: number;
};

export type Action = "view" | "control";

/** A §5 command, e.g. `{op: "moveDevice", device: "thermo-1", org: "east"}`. */
export type Command = { op: string; [field: string]: unknown };

/** Errors thrown by the engine carry a stable `code` (SPEC §6.4). */
export interface FleetgateError extends Error {
  code: string;
}

export class PolicyEngine {
  private constructor();
  static fromJson(snapshot: string | object): PolicyEngine;
  static fromSigned(
    envelope: string | object,
    keys: { [keyId: string]: string },
    options?: { now?: number; minRevision?: number },
  ): PolicyEngine;
  readonly revision: number;
  canView(user: string, device: string): boolean;
  canControl(user: string, device: string): boolean;
  explain(user: string, device: string, action: Action): Decision;
  visibleDevices(user: string, options?: { action?: Action; activeOrg?: string }): string[];
  filterDevices(user: string, devices: string[], action?: Action): string[];
  switchableOrgs(user: string): string[];
  permissionsIn(user: string, org: string): string[];
  decide(actor: string, command: Command | object): Decision;
  preview(actor: string, command: Command | object): Preview;
  /** The delta an allowed command causes (what the server applies), or null when denied. */
  commandDelta(actor: string, command: Command | object): object | null;
  applyDelta(delta: string | object): void;
  project(viewer: string): object;
  toJson(): object;
  free(): void;
}

/** Browsers and workers: instantiate the wasm module first. A no-op in Node. */
export default function init(
  input?: RequestInfo | URL | Response | BufferSource | WebAssembly.Module,
): Promise<unknown>;

/** Synchronous instantiation from bytes or a compiled module. A no-op in Node. */
export function initSync(module?: BufferSource | WebAssembly.Module): unknown;
