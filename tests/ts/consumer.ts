// A typed consumer of the package: `tsc --noEmit` checks the declarations against real use.
import init, {
  PolicyEngine,
  type Decision,
  type Preview,
  type Access,
  type ErrorCode,
  type FleetgateError,
  type TokenIdentity,
} from "fleetgate";

async function main(snapshot: object): Promise<void> {
  await init();
  const engine: PolicyEngine = PolicyEngine.fromJson(snapshot);
  const again = PolicyEngine.fromJson(JSON.stringify(snapshot));
  const signed = PolicyEngine.fromSigned("{}", { k1: "key" }, { now: 1, minRevision: 2 });
  const rev: number = engine.revision;
  const expiresAt: number | null = signed.expiresAt;
  signed.applySignedDelta("{}", { k1: "key" }, { now: 1 });
  signed.applySignedDelta({ format: "fleetgate/signed@1" }, { k1: "key" });
  const who: TokenIdentity = PolicyEngine.verifyToken("a.b.c", { k1: "key" }, { now: 1 });
  const user: string = who.user;
  const session: string = who.session;
  const until: number = PolicyEngine.verifyToken("a.b.c", {}).expiresAt;
  try {
    PolicyEngine.verifyToken("", {});
  } catch (e) {
    const errorCode: ErrorCode = (e as FleetgateError).code;
    if (errorCode === "BAD_TOKEN" || errorCode === "INVALID_ARGUMENT") void errorCode;
  }
  const ok: boolean = engine.canView("alice", "thermo-1") && engine.canControl("alice", "thermo-1");
  const why: Decision = engine.explain("alice", "thermo-1", "control");
  const code: string = why.code;
  const org: string | undefined = why.org;
  const ids: string[] = engine.visibleDevices("alice", { action: "control", activeOrg: "east" });
  const kept: string[] = engine.filterDevices("alice", ids, "view");
  const orgs: string[] = engine.switchableOrgs("alice");
  const perms: string[] = engine.permissionsIn("alice", "east");
  const decision: Decision = engine.decide("alice", { op: "moveDevice", device: "thermo-1", org: "east" });
  const preview: Preview = engine.preview("alice", { op: "removeDevice", device: "thermo-1" });
  const gained: Access[] = preview.gained;
  const delta = engine.commandDelta("alice", { op: "removeDevice", device: "thermo-1" });
  if (delta !== null) engine.applyDelta(delta);
  engine.applyDelta('{"format":"fleetgate/delta@1","from":1,"to":2,"ops":[]}');
  const projection: object = engine.project("alice");
  const json: object = engine.toJson();
  void [again, signed, rev, expiresAt, user, session, until, ok, code, org, kept, orgs, perms, decision, gained, projection, json];
  engine.free();
}

void main;
