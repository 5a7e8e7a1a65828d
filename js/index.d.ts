// Types of the fleetgate package (SPEC §6). The one source of the TypeScript API.

/** The decision codes of SPEC §3 and §5. */
export type DecisionCode =
  | "ALLOW_ORG"
  | "ALLOW_OWN"
  | "ALLOW_SUB_ORG"
  | "ALLOW"
  | "DENY_UNKNOWN_USER"
  | "DENY_UNKNOWN_DEVICE"
  | "DENY_USER_INACTIVE"
  | "DENY_ORG_SUSPENDED"
  | "DENY_NO_PERMISSION"
  | "DENY_ESCALATION"
  | "DENY_LAST_ADMIN"
  | "DENY_PLAN"
  | "DENY_DEPTH"
  | "DENY_NOT_EMPTY"
  | "DENY_INVALID_TARGET";

/** The error codes of SPEC §6.4. */
export type ErrorCode =
  | "INVALID_JSON"
  | "INVALID_SNAPSHOT"
  | "INVALID_DELTA"
  | "INVALID_COMMAND"
  | "DUPLICATE_ID"
  | "UNKNOWN_REFERENCE"
  | "ORG_CYCLE"
  | "DEPTH_EXCEEDED"
  | "OWNER_NOT_MEMBER"
  | "UNKNOWN_ROLE"
  | "UNKNOWN_PERMISSION"
  | "REVISION_MISMATCH"
  | "BAD_SIGNATURE"
  | "UNKNOWN_KEY"
  | "ROLLBACK"
  | "EXPIRED"
  | "NOT_SWITCHABLE"
  | "BAD_TOKEN"
  | "INVALID_ARGUMENT";

/** A permission id of SPEC §2. */
export type Permission =
  | "devices.add"
  | "devices.org.control"
  | "devices.org.view"
  | "devices.own.control"
  | "devices.own.view"
  | "devices.remove"
  | "devices.transfer"
  | "orgs.create"
  | "orgs.edit"
  | "orgs.switch"
  | "roles.edit"
  | "users.edit"
  | "users.invite"
  | "users.remove"
  | "users.suspend"
  | "users.view";

/**
 * A decision with its reason (SPEC §3, §5). An allowed check names the granting membership
 * (`org`, `role`) and `permission`. A denied command names what it lacks:
 * `DENY_NO_PERMISSION` — the missing `permission` and the `org` it is needed in (`claimDevice`:
 * only `org`, where an active membership is needed); `DENY_ESCALATION` — the `permissions` beyond
 * the actor's in `org`; `DENY_NOT_EMPTY` — a blocking `device`, else member (`user`), else
 * sub-org (`org`).
 */
export type Decision = {
  allowed: boolean;
  code: DecisionCode;
  org?: string;
  role?: string;
  permission?: Permission;
  permissions?: Permission[];
  user?: string;
  device?: string;
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
  code: ErrorCode;
}

/** A key set: key id to the base64url Ed25519 public key (SPEC §4.4). */
export type KeySet = { [keyId: string]: string };

/** Who an access token speaks for (SPEC §4.5): `sub`, `sid` and `exp` of its claims. */
export type TokenIdentity = { user: string; session: string; expiresAt: number };

export class PolicyEngine {
  private constructor();
  static fromJson(snapshot: string | object): PolicyEngine;
  /** `now` defaults to the current unix time. */
  static fromSigned(envelope: string | object, keys: KeySet, options?: { now?: number; minRevision?: number }): PolicyEngine;
  /** Verifies an access token (SPEC §4.5); throws BAD_TOKEN, UNKNOWN_KEY, BAD_SIGNATURE or EXPIRED. */
  static verifyToken(token: string, keys: KeySet, options?: { now?: number }): TokenIdentity;
  /** Every permission id with the name a dashboard shows for it (SPEC §2), ascending by id. */
  static permissionLabels(): { [P in Permission]: string };
  readonly revision: number;
  /** The `expiresAt` of the last signed snapshot or delta accepted; null otherwise. */
  readonly expiresAt: number | null;
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
  /** Applies a signed delta (SPEC §4.4) atomically; `now` defaults to the current unix time. */
  applySignedDelta(envelope: string | object, keys: KeySet, options?: { now?: number }): void;
  project(viewer: string): object;
  toJson(): object;
  free(): void;
}

/** Browsers: instantiate the wasm module first. A no-op in Node and workerd. */
export default function init(
  input?: RequestInfo | URL | Response | BufferSource | WebAssembly.Module,
): Promise<unknown>;

/** Synchronous instantiation from bytes or a compiled module. A no-op in Node and workerd. */
export function initSync(module?: BufferSource | WebAssembly.Module): unknown;
