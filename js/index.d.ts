/**
 * `fleetgate`: the PolicyEngine (SPEC §6) — checks, lists, decisions and previews of commands,
 * deltas, projections and signed snapshots — with its codes, documents and command types.
 * @module fleetgate
 */
// Types of the fleetgate package (SPEC §6). The one source of the TypeScript API:
// tests/js/drift.test.mjs checks it against the runtime exports and methods and against the
// code lists of the Rust engine (src/error.rs, src/decide.rs, src/command.rs, src/model.rs).

// ---- codes ------------------------------------------------------------------------------------

/** Codes of an allowed decision: a check (SPEC §3) or a command (§5, `ALLOW`). */
export type AllowCode = "ALLOW_ORG" | "ALLOW_OWN" | "ALLOW_SUB_ORG" | "ALLOW";

/** Codes of a denied decision (SPEC §3 and §5). */
export type DenyCode =
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

/** Every decision code of SPEC §3 and §5. */
export type DecisionCode = AllowCode | DenyCode;

/** The error codes of SPEC §6.4: the `code` of every FleetgateError the engine throws. */
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

/** The stable permission ids of SPEC §2. */
export type Permission =
  | "devices.own.view"
  | "devices.own.control"
  | "devices.org.view"
  | "devices.org.control"
  | "devices.add"
  | "devices.transfer"
  | "devices.remove"
  | "orgs.switch"
  | "orgs.create"
  | "orgs.edit"
  | "users.view"
  | "users.invite"
  | "users.edit"
  | "users.remove"
  | "users.suspend"
  | "roles.edit";

export type Action = "view" | "control";

// ---- decisions ----------------------------------------------------------------------------------

/** An allowed decision; for a check, the membership (org, role) and permission that granted it. */
export type AllowDecision = { allowed: true; code: AllowCode; org?: string; role?: string; permission?: Permission };

/**
 * A denied decision: it names what it lacks.
 *
 * A check (`explain`): `DENY_NO_PERMISSION` — the org-wide device `permission` of the action
 * (`devices.org.view` / `devices.org.control`) and the device's `org` (holding it there, or above
 * with `orgs.switch`, would grant); `DENY_ORG_SUSPENDED` — the suspended `org` (the device's own,
 * else its nearest suspended ancestor). Other check denials carry the code only.
 *
 * A command (`decide`, `preview`): `DENY_NO_PERMISSION` — the missing `permission` and the `org`
 * it is needed in (`claimDevice`: only `org`, where an active membership is needed);
 * `DENY_ESCALATION` — the `permissions` beyond the actor's in `org`; `DENY_NOT_EMPTY` — a
 * blocking `device`, else member (`user`), else sub-org (`org`).
 */
export type DenyDecision = {
  allowed: false;
  code: DenyCode;
  org?: string;
  role?: string;
  permission?: Permission;
  permissions?: Permission[];
  user?: string;
  device?: string;
};

/** A decision with its reason (SPEC §3, §5), discriminated by `allowed`. */
export type Decision = AllowDecision | DenyDecision;

/** One (user, device, action) access. */
export type Access = { user: string; device: string; action: Action };

/** What `preview` returns. `truncated` (with the counts) appears only for very wide changes. */
export type Preview = {
  decision: Decision;
  gained: Access[];
  lost: Access[];
  truncated?: boolean;
  gainedCount?: number;
  lostCount?: number;
};

// ---- documents (SPEC §4) ------------------------------------------------------------------------

export type Plan = "free" | "plus" | "pro";
export type UserStatus = "active" | "pending" | "suspended";
/** A role table: role name to its permissions. */
export type RoleTable = { [role: string]: Permission[] };

export type Org = { id: string; name: string; parent?: string | null; plan?: Plan; suspended?: boolean; roles?: RoleTable };
export type User = { id: string; email: string; name: string; status: UserStatus };
export type Membership = { user: string; org: string; role: string };
export type Device = { id: string; name: string; org: string; owner?: string | null };

/** A snapshot (SPEC §4.1), as given to `fromJson`. */
export type Snapshot = {
  format: "fleetgate/snapshot@1";
  revision: number;
  viewer?: string | null;
  issuedAt?: number;
  expiresAt?: number;
  orgs?: Org[];
  users?: User[];
  memberships?: Membership[];
  devices?: Device[];
};

/** A snapshot as the engine writes it (`toJson`): every field present. */
export type SnapshotOut = {
  format: "fleetgate/snapshot@1";
  revision: number;
  viewer: string | null;
  issuedAt?: number;
  expiresAt?: number;
  orgs: Array<Org & { parent: string | null; plan: Plan; suspended: boolean }>;
  users: User[];
  memberships: Membership[];
  devices: Array<Device & { owner: string | null }>;
};

/** A viewer's projection (SPEC §4.3): a snapshot whose `viewer` is that user. */
export type Projection = SnapshotOut & { viewer: string };

/** One fact of a delta (SPEC §4.2). */
export type DeltaOp =
  | { op: "putOrg"; org: Org }
  | { op: "putUser"; user: User }
  | { op: "putMembership"; membership: Membership }
  | { op: "putDevice"; device: Device }
  | { op: "removeOrg"; id: string }
  | { op: "removeUser"; id: string }
  | { op: "removeDevice"; id: string }
  | { op: "removeMembership"; user: string; org: string };

/** A delta (SPEC §4.2): moves a snapshot from revision `from` to `to`. */
export type Delta = { format: "fleetgate/delta@1"; from: number; to: number; issuedAt?: number; expiresAt?: number; ops: DeltaOp[] };

/** A signed envelope (SPEC §4.4) of a snapshot or delta. */
export type Envelope = { format: "fleetgate/signed@1"; keyId: string; payload: string; signature: string };

// ---- commands (SPEC §5) -------------------------------------------------------------------------

/** A §5 command, discriminated by `op`. */
export type Command =
  | { op: "createOrg"; id: string; name: string; parent: string }
  /** `userId` is the new user's id: filled in by the server; a preview may leave it out. */
  | { op: "invite"; email: string; org: string; role: string; userId?: string }
  | { op: "setRole"; user: string; org: string; role: string }
  | { op: "removeMember"; user: string; org: string }
  | { op: "suspendUser"; user: string }
  | { op: "reactivateUser"; user: string }
  | { op: "addDevice"; id: string; name: string; org: string; owner?: string | null }
  | { op: "transferDevice"; device: string; owner: string; org?: string }
  | { op: "moveDevice"; device: string; org: string }
  | { op: "removeDevice"; device: string }
  | { op: "setRolePermissions"; org: string; role: string; permissions: Permission[] }
  | { op: "suspendOrg"; org: string }
  | { op: "resumeOrg"; org: string }
  | { op: "deleteOrg"; org: string }
  | { op: "claimDevice"; device: string; code: string; org: string };

/** The op names of §5. */
export type CommandOp = Command["op"];

// ---- errors -------------------------------------------------------------------------------------

/** Every error the package throws: a real `Error` with a stable `code` (SPEC §6.4). */
export class FleetgateError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
  readonly name: "FleetgateError";
  code: ErrorCode;
}

/** Whether `e` is a FleetgateError (also one from another copy of the package or realm). */
export function isFleetgateError(e: unknown): e is FleetgateError;

// ---- the engine ---------------------------------------------------------------------------------

/** A key set: key id to the base64url Ed25519 public key (SPEC §4.4). */
export type KeySet = { [keyId: string]: string };

/** Who an access token speaks for (SPEC §4.5): `sub`, `sid` and `exp` of its claims. */
export type TokenIdentity = { user: string; session: string; expiresAt: number };

/**
 * One engine over one snapshot. Holds wasm memory: call `free()` (or use `using`) when done.
 * After `free()` every member but `freed` throws a FleetgateError with code INVALID_ARGUMENT.
 */
export class PolicyEngine {
  private constructor();
  /** Loads a snapshot (SPEC §4.1) from JSON text or an object. */
  static fromJson(snapshot: string | Snapshot): PolicyEngine;
  /** Loads a signed snapshot (SPEC §4.4); `now` defaults to the current unix time. */
  static fromSigned(envelope: string | Envelope, keys: KeySet, options?: { now?: number; minRevision?: number }): PolicyEngine;
  /** Verifies an access token (SPEC §4.5); throws BAD_TOKEN, UNKNOWN_KEY, BAD_SIGNATURE or EXPIRED. */
  static verifyToken(token: string, keys: KeySet, options?: { now?: number }): TokenIdentity;
  /** Every permission id with the name a dashboard shows for it (SPEC §2), ascending by id. */
  static permissionLabels(): { [P in Permission]: string };
  readonly revision: number;
  /** The `expiresAt` of the last signed snapshot or delta accepted; null otherwise. */
  readonly expiresAt: number | null;
  /** Whether `free()` was called (never throws). */
  readonly freed: boolean;
  canView(user: string, device: string): boolean;
  canControl(user: string, device: string): boolean;
  explain(user: string, device: string, action: Action): Decision;
  /** Ascending id order; throws NOT_SWITCHABLE for an `activeOrg` outside `switchableOrgs(user)`. */
  visibleDevices(user: string, options?: { action?: Action; activeOrg?: string }): string[];
  /** Keeps input order, drops unknown ids. */
  filterDevices(user: string, devices: string[], action?: Action): string[];
  switchableOrgs(user: string): string[];
  permissionsIn(user: string, org: string): Permission[];
  /** Decides a command (SPEC §5) without changing anything; INVALID_COMMAND when malformed. */
  decide(actor: string, command: Command): Decision;
  /** Who gains and loses view/control if the command is applied. */
  preview(actor: string, command: Command): Preview;
  /** The delta an allowed command causes (what the server applies), or null when denied. */
  commandDelta(actor: string, command: Command): Delta | null;
  /** Applies a delta (SPEC §4.2) atomically. */
  applyDelta(delta: string | Delta): void;
  /** Applies a signed delta (SPEC §4.4) atomically; `now` defaults to the current unix time. */
  applySignedDelta(envelope: string | Envelope, keys: KeySet, options?: { now?: number }): void;
  /** The projection for a viewer (SPEC §4.3). */
  project(viewer: string): Projection;
  /** The snapshot as a plain object. */
  toJson(): SnapshotOut;
  /** Releases the wasm memory; idempotent. */
  free(): void;
  /** Frees the engine at the end of a `using` block. */
  [Symbol.dispose](): void;
}

/** Browsers: instantiate the wasm module first. A no-op in Node and workerd. */
export default function init(
  input?: RequestInfo | URL | Response | BufferSource | WebAssembly.Module,
): Promise<unknown>;

/** Synchronous instantiation from bytes or a compiled module. A no-op in Node and workerd. */
export function initSync(module?: BufferSource | WebAssembly.Module): unknown;

declare global {
  interface SymbolConstructor {
    /** `Symbol.dispose` (TC39 explicit resource management), for targets whose lib lacks it. */
    readonly dispose: unique symbol;
  }
}
