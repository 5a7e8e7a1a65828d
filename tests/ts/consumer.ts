// A typed consumer of the package: `tsc --noEmit` checks the declarations against real use.
import init, {
  PolicyEngine,
  type Decision,
  type Preview,
  type Access,
  type ErrorCode,
  type TokenIdentity,
  type DecisionCode,
  type Command,
  type Delta,
  type Projection,
  type SnapshotOut,
  type Snapshot,
  type Envelope,
  type Permission,
  FleetgateError,
  isFleetgateError,
} from "fleetgate";

/** Exhaustive over the decision codes: a code added without a case fails to compile. */
function describeDecision(code: DecisionCode): string {
  switch (code) {
    case "ALLOW_ORG":
    case "ALLOW_OWN":
    case "ALLOW_SUB_ORG":
    case "ALLOW":
      return "allowed";
    case "DENY_UNKNOWN_USER":
    case "DENY_UNKNOWN_DEVICE":
    case "DENY_USER_INACTIVE":
    case "DENY_ORG_SUSPENDED":
    case "DENY_NO_PERMISSION":
    case "DENY_ESCALATION":
    case "DENY_LAST_ADMIN":
    case "DENY_PLAN":
    case "DENY_DEPTH":
    case "DENY_NOT_EMPTY":
    case "DENY_INVALID_TARGET":
      return "denied";
    default: {
      const never: never = code;
      return never;
    }
  }
}

/** Exhaustive over the error codes. */
function describeError(code: ErrorCode): string {
  switch (code) {
    case "INVALID_JSON":
    case "INVALID_SNAPSHOT":
    case "INVALID_DELTA":
    case "INVALID_COMMAND":
    case "INVALID_ARGUMENT":
    case "BAD_TOKEN":
      return "bad input";
    case "DUPLICATE_ID":
    case "UNKNOWN_REFERENCE":
    case "ORG_CYCLE":
    case "DEPTH_EXCEEDED":
    case "OWNER_NOT_MEMBER":
    case "UNKNOWN_ROLE":
    case "UNKNOWN_PERMISSION":
      return "invariant";
    case "REVISION_MISMATCH":
    case "ROLLBACK":
    case "EXPIRED":
      return "stale";
    case "BAD_SIGNATURE":
    case "UNKNOWN_KEY":
      return "untrusted";
    case "NOT_SWITCHABLE":
      return "argument";
    default: {
      const never: never = code;
      return never;
    }
  }
}

/** Exhaustive over the commands, each field typed by its op. */
function target(cmd: Command): string {
  switch (cmd.op) {
    case "createOrg":
      return cmd.parent;
    case "invite":
      return cmd.email + (cmd.userId ?? "");
    case "setRole":
    case "removeMember":
      return cmd.user;
    case "suspendUser":
    case "reactivateUser":
      return cmd.user;
    case "addDevice":
      return cmd.id + (cmd.owner ?? "");
    case "transferDevice":
      return cmd.owner + (cmd.org ?? "");
    case "moveDevice":
    case "removeDevice":
      return cmd.device;
    case "setRolePermissions":
      return cmd.permissions.join(",");
    case "suspendOrg":
    case "resumeOrg":
    case "deleteOrg":
      return cmd.org;
    case "claimDevice":
      return cmd.code;
    default: {
      const never: never = cmd;
      return never;
    }
  }
}

async function main(snapshot: Snapshot): Promise<void> {
  await init();
  const engine: PolicyEngine = PolicyEngine.fromJson(snapshot);
  const again = PolicyEngine.fromJson(JSON.stringify(snapshot));
  const signed = PolicyEngine.fromSigned("{}", { k1: "key" }, { now: 1, minRevision: 2 });
  const rev: number = engine.revision;
  const expiresAt: number | null = signed.expiresAt;
  signed.applySignedDelta("{}", { k1: "key" }, { now: 1 });
  signed.applySignedDelta({ format: "fleetgate/signed@1", keyId: "k1", payload: "", signature: "" }, { k1: "key" });
  const who: TokenIdentity = PolicyEngine.verifyToken("a.b.c", { k1: "key" }, { now: 1 });
  const user: string = who.user;
  const session: string = who.session;
  const until: number = PolicyEngine.verifyToken("a.b.c", {}).expiresAt;
  try {
    PolicyEngine.verifyToken("", {});
  } catch (e) {
    if (isFleetgateError(e)) {
      const errorCode: ErrorCode = e.code;
      void describeError(errorCode);
    }
    if (e instanceof FleetgateError) void describeError(e.code);
  }
  const mine = new FleetgateError("EXPIRED", "past");
  void mine;
  const ok: boolean = engine.canView("alice", "thermo-1") && engine.canControl("alice", "thermo-1");
  const why: Decision = engine.explain("alice", "thermo-1", "control");
  const code: string = describeDecision(why.code);
  if (why.allowed) {
    const granted: Permission | undefined = why.permission;
    void granted;
  }
  const org: string | undefined = why.org;
  const ids: string[] = engine.visibleDevices("alice", { action: "control", activeOrg: "east" });
  const kept: string[] = engine.filterDevices("alice", ids, "view");
  const orgs: string[] = engine.switchableOrgs("alice");
  const perms: string[] = engine.permissionsIn("alice", "east");
  const decision: Decision = engine.decide("alice", { op: "moveDevice", device: "thermo-1", org: "east" });
  const preview: Preview = engine.preview("alice", { op: "removeDevice", device: "thermo-1" });
  const gained: Access[] = preview.gained;
  const delta: Delta | null = engine.commandDelta("alice", { op: "removeDevice", device: "thermo-1" });
  if (delta !== null) {
    engine.applyDelta(delta);
    for (const op of delta.ops) if (op.op === "putDevice") void op.device.org;
  }
  void target({ op: "transferDevice", device: "thermo-1", owner: "bob" });
  // @ts-expect-error: an unknown op is not a Command
  engine.decide("alice", { op: "fly", device: "thermo-1" });
  // @ts-expect-error: moveDevice needs `org`
  engine.decide("alice", { op: "moveDevice", device: "thermo-1" });
  // @ts-expect-error: not a permission id
  engine.decide("alice", { op: "setRolePermissions", org: "acme", role: "Staff", permissions: ["devices.fly"] });
  const snap: Snapshot = { format: "fleetgate/snapshot@1", revision: 1, devices: [{ id: "d", name: "D", org: "acme" }] };
  const env: Envelope = { format: "fleetgate/signed@1", keyId: "k1", payload: "", signature: "" };
  void [PolicyEngine.fromJson(snap), env];
  const scoped = PolicyEngine.fromJson(snap);
  scoped[Symbol.dispose]();
  const gone: boolean = scoped.freed;
  void gone;
  engine.applyDelta('{"format":"fleetgate/delta@1","from":1,"to":2,"ops":[]}');
  const projection: Projection = engine.project("alice");
  const viewer: string = projection.viewer;
  const json: SnapshotOut = engine.toJson();
  const owner: string | null = json.devices[0]?.owner ?? null;
  void [viewer, owner];
  void [again, signed, rev, expiresAt, user, session, until, ok, code, org, kept, orgs, perms, decision, gained, projection, json];
  engine.free();
}

void main;

import { createSync, SyncError, type Sync, type SyncUpdate } from "fleetgate/sync";

async function following(): Promise<void> {
  const sync: Sync = createSync({
    baseUrl: "http://127.0.0.1:8080",
    getToken: async () => "token",
    activateOnLoad: false,
    onUpdate: (u: SyncUpdate) => {
      if (u.pending) sync.activate();
    },
    onError: (e) => {
      if (e instanceof SyncError && e.code === "UNAUTHENTICATED") void sync.stop();
    },
    retry: { min: 100 },
  });
  await sync.ready;
  const engine: PolicyEngine | null = sync.engine;
  const rev: number | null = sync.revision;
  const off = sync.subscribe(() => void sync.status);
  off();
  void [engine?.canView("alice", "thermo-1"), rev];
  await sync.close();
}
void following;
