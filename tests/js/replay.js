// Replays one conformance vector file (tests/vectors/*.json) against a PolicyEngine class.
// Shared by the Node suites and the browser page, so every layer runs the same code.

function same(a, b) {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}

function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = canon(v[k]);
    return out;
  }
  return v;
}

const signedState = (engine) => ({ revision: engine.revision, expiresAt: engine.expiresAt });

// `state.engine` is the engine later cases use (fromSigned replaces it).
function call(PolicyEngine, state, name, args) {
  const engine = state.engine;
  switch (name) {
    case "fromJson":
      return PolicyEngine.fromJson(args[0]).revision;
    case "fromSigned": {
      const loaded = PolicyEngine.fromSigned(...args);
      if (state.engine) state.engine.free();
      state.engine = loaded;
      return signedState(loaded);
    }
    case "applySignedDelta":
      engine.applySignedDelta(...args);
      return signedState(engine);
    case "verifyToken":
      return PolicyEngine.verifyToken(...args);
    case "revision":
      return engine.revision;
    case "expiresAt":
      return engine.expiresAt;
    case "applyCommand": {
      const decision = engine.decide(args[0], args[1]);
      const delta = engine.commandDelta(args[0], args[1]);
      if ((delta !== null) !== decision.allowed) throw new Error("decide and commandDelta disagree");
      if (delta) engine.applyDelta(delta);
      return decision;
    }
    case "applyDelta":
      engine.applyDelta(args[0]);
      return null;
    case "project": {
      const projection = engine.project(args[0]);
      PolicyEngine.fromJson(projection).free(); // a projection always loads
      return projection;
    }
    default:
      if (typeof engine[name] !== "function") throw new Error(`unknown call ${name}`);
      return engine[name](...args);
  }
}

/** Replays `file` (parsed JSON); returns `{cases, failures: [message]}`. */
export function replay(PolicyEngine, file, label) {
  const failures = [];
  const state = { engine: file.snapshot === null || file.snapshot === undefined ? null : PolicyEngine.fromJson(file.snapshot) };
  const snap = () => (state.engine ? JSON.stringify([state.engine.toJson(), state.engine.expiresAt]) : null);
  file.cases.forEach((c, i) => {
    const at = `${label} case ${i} (${c.call} ${c.name ?? ""})`;
    const before = snap();
    let got;
    let error = null;
    try {
      got = call(PolicyEngine, state, c.call, c.args ?? []);
    } catch (e) {
      error = e;
    }
    if (c.error !== undefined) {
      if (!error) return failures.push(`${at}: expected ${c.error}, got ${JSON.stringify(got)}`);
      if (!(error instanceof Error)) return failures.push(`${at}: threw a non-Error`);
      if (error.code !== c.error) return failures.push(`${at}: expected ${c.error}, got ${error.code}: ${error.message}`);
      if (c.errorMentions && !error.message.includes(c.errorMentions))
        return failures.push(`${at}: message "${error.message}" does not mention ${c.errorMentions}`);
      if (snap() !== before) failures.push(`${at}: a failed call changed the engine`);
      return;
    }
    if (error) return failures.push(`${at}: unexpected ${error.code ?? ""} ${error.message}`);
    if ("expect" in c && !(c.expect === null && got === null) && !same(got, c.expect))
      failures.push(`${at}: expected ${JSON.stringify(c.expect)}, got ${JSON.stringify(got)}`);
  });
  if (state.engine) state.engine.free();
  return { cases: file.cases.length, failures };
}
