// The one source of the TypeScript API against everything it describes: index.d.ts (parsed with
// the TypeScript compiler) must name exactly the codes, permissions and command shapes of the
// Rust engine (parsed from src/error.rs, src/decide.rs, src/command.rs, src/model.rs) and exactly
// the exports and PolicyEngine members the runtime has. A code added in Rust, a method added in
// JS or a type edited by hand without the other fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import ts from "typescript";
import * as node from "fleetgate";
import * as web from "../../pkg/web.js";

const root = new URL("../../", import.meta.url);
const read = (p) => readFileSync(new URL(p, root), "utf8");

// ---- the Rust side --------------------------------------------------------------------------

/** `Self::X => "WIRE"` arms of the `as_str` fn of `impl <type>` in a Rust source. */
function rustAsStr(file, type) {
  const src = read(file);
  const start = src.indexOf(`impl ${type} {`);
  assert.ok(start >= 0, `impl ${type} in ${file}`);
  const body = src.slice(start, src.indexOf("\n}\n", start));
  const fn = body.slice(body.indexOf("fn as_str"));
  const match = fn.slice(0, fn.indexOf("\n    }\n"));
  const out = [...match.matchAll(/Self::(\w+)\s*=>\s*"([^"]+)"/g)].map((m) => ({ variant: m[1], wire: m[2] }));
  assert.ok(out.length > 0, `no codes found in ${file}`);
  return out;
}

/** Command ops and their fields from the strict `Deserialize` of src/command.rs. */
function rustCommands() {
  const src = read("src/command.rs");
  const de = src.slice(src.indexOf("impl<'de> Deserialize<'de> for Command"));
  const body = de.slice(0, de.indexOf("_ => return Err"));
  const ops = {};
  // Each arm: "op" => ... up to the next arm.
  const arms = [...body.matchAll(/"(\w+)"\s*=>/g)];
  for (let i = 0; i < arms.length; i++) {
    const text = body.slice(arms[i].index, i + 1 < arms.length ? arms[i + 1].index : body.length);
    const fields = {};
    for (const m of text.matchAll(/f\.(take|opt)\("(\w+)"\)/g)) fields[m[2]] = m[1] === "opt" ? "optional" : "required";
    ops[arms[i][1]] = fields;
  }
  // The list used in error messages agrees with the parser.
  const list = src.slice(src.indexOf("const OPS: &[&str] = &["));
  const named = [...list.slice(0, list.indexOf("];")).matchAll(/"(\w+)"/g)].map((m) => m[1]);
  assert.deepEqual([...named].sort(), Object.keys(ops).sort(), "OPS in src/command.rs lists the parsed ops");
  return ops;
}

// ---- the TypeScript side ----------------------------------------------------------------------

const dts = read("pkg/index.d.ts");
const sf = ts.createSourceFile("index.d.ts", dts, ts.ScriptTarget.Latest, true);
const aliases = new Map();
const exported = new Map(); // name -> kind
for (const st of sf.statements) {
  const isExport = st.modifiers?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
  if (ts.isTypeAliasDeclaration(st)) aliases.set(st.name.text, st.type);
  if (!isExport) continue;
  const isDefault = st.modifiers.some((m) => m.kind === ts.SyntaxKind.DefaultKeyword);
  if (ts.isClassDeclaration(st)) exported.set(st.name.text, "value");
  else if (ts.isFunctionDeclaration(st)) exported.set(isDefault ? "default" : st.name.text, "value");
  else if (ts.isVariableStatement(st)) for (const d of st.declarationList.declarations) exported.set(d.name.text, "value");
  else if (ts.isTypeAliasDeclaration(st) || ts.isInterfaceDeclaration(st)) exported.set(st.name.text, "type");
}

/** The string literals of a union type alias, following referenced aliases. */
function literals(name) {
  const out = [];
  const walk = (node) => {
    if (ts.isUnionTypeNode(node)) node.types.forEach(walk);
    else if (ts.isLiteralTypeNode(node) && ts.isStringLiteral(node.literal)) out.push(node.literal.text);
    else if (ts.isTypeReferenceNode(node) && aliases.has(node.typeName.text)) walk(aliases.get(node.typeName.text));
    else assert.fail(`${name}: unexpected member ${node.getText(sf)}`);
  };
  assert.ok(aliases.has(name), `index.d.ts declares ${name}`);
  walk(aliases.get(name));
  return out;
}

function dtsCommands() {
  const ops = {};
  const union = aliases.get("Command");
  assert.ok(union && ts.isUnionTypeNode(union), "Command is a union");
  for (const member of union.types) {
    assert.ok(ts.isTypeLiteralNode(member), `Command member ${member.getText(sf)} is an object type`);
    let op = null;
    const fields = {};
    for (const p of member.members) {
      const name = p.name.text;
      if (name === "op") op = p.type.literal.text;
      else fields[name] = p.questionToken ? "optional" : "required";
    }
    assert.ok(op, `Command member without op: ${member.getText(sf)}`);
    assert.ok(!(op in ops), `op ${op} twice in Command`);
    ops[op] = fields;
  }
  return ops;
}

function classMembers(name) {
  const cls = sf.statements.find((s) => ts.isClassDeclaration(s) && s.name?.text === name);
  assert.ok(cls, `class ${name} in index.d.ts`);
  const instance = [];
  const statics = [];
  for (const m of cls.members) {
    if (ts.isConstructorDeclaration(m)) continue;
    const key = ts.isComputedPropertyName(m.name) ? `[${m.name.expression.getText(sf)}]` : m.name.text;
    (m.modifiers?.some((x) => x.kind === ts.SyntaxKind.StaticKeyword) ? statics : instance).push(key);
  }
  return { instance: instance.sort(), statics: statics.sort() };
}

const sorted = (a) => [...a].sort();

// ---- the checks ---------------------------------------------------------------------------------

test("ErrorCode is exactly src/error.rs ErrorCode::as_str", () => {
  const rust = rustAsStr("src/error.rs", "ErrorCode").map((c) => c.wire);
  assert.deepEqual(sorted(literals("ErrorCode")), sorted(rust));
  assert.equal(new Set(rust).size, rust.length);
});

test("DecisionCode is exactly src/decide.rs Code::as_str, split by is_allow", () => {
  const rust = rustAsStr("src/decide.rs", "Code");
  assert.deepEqual(sorted(literals("DecisionCode")), sorted(rust.map((c) => c.wire)));
  const src = read("src/decide.rs");
  const allowArm = src.slice(src.indexOf("fn is_allow")).split("\n").slice(0, 3).join("\n");
  const allowVariants = [...allowArm.matchAll(/Self::(\w+)/g)].map((m) => m[1]);
  const allow = rust.filter((c) => allowVariants.includes(c.variant)).map((c) => c.wire);
  assert.ok(allow.length > 0, "is_allow parsed");
  assert.deepEqual(sorted(literals("AllowCode")), sorted(allow));
  assert.deepEqual(sorted(literals("DenyCode")), sorted(rust.map((c) => c.wire).filter((w) => !allow.includes(w))));
});

/** The fields of a type literal alias in index.d.ts: name → optional? */
function dtsFields(name) {
  const node = aliases.get(name);
  assert.ok(node && ts.isTypeLiteralNode(node), `${name} is an object type in index.d.ts`);
  return Object.fromEntries(node.members.map((p) => [p.name.text, Boolean(p.questionToken)]));
}

test("DenyDecision and AllowDecision declare exactly the fields of src/decide.rs Decision; every vector decision fits", () => {
  const src = read("src/decide.rs");
  const start = src.indexOf("pub struct Decision {");
  assert.ok(start >= 0, "pub struct Decision in src/decide.rs");
  const body = src.slice(start, src.indexOf("\n}\n", start));
  const rust = [...body.matchAll(/^\s+pub (\w+): ([^,]+),/gm)].map((m) => ({ name: m[1], optional: m[2].startsWith("Option<") }));
  assert.ok(rust.length >= 8, "Decision's fields parsed");
  const deny = dtsFields("DenyDecision");
  assert.deepEqual(sorted(Object.keys(deny)), sorted(rust.map((f) => f.name)), "DenyDecision is Decision");
  for (const f of rust) assert.equal(deny[f.name], f.optional, `DenyDecision.${f.name} optional as in Rust`);
  const allow = dtsFields("AllowDecision");
  for (const k of Object.keys(allow)) assert.ok(rust.some((f) => f.name === k), `AllowDecision.${k} is a Decision field`);
  // Every decision a vector expects (checks and commands, denials and allows) has only declared fields.
  let seen = 0;
  for (const name of ["commands", "cross-tree", "deltas", "manufacturer", "projection", "reasons"]) {
    const file = JSON.parse(read(`tests/vectors/${name}.json`));
    for (const c of file.cases) {
      const d = c.call === "preview" ? c.expect?.decision : ["explain", "decide", "applyCommand"].includes(c.call) ? c.expect : undefined;
      if (!d || typeof d !== "object") continue;
      seen++;
      const declared = d.allowed ? allow : deny;
      for (const k of Object.keys(d)) assert.ok(k in declared, `${name}: ${c.call} ${c.name ?? ""} has undeclared field ${k}`);
    }
  }
  assert.ok(seen > 50, "vector decisions read");
});

test("Permission is exactly src/model.rs Permission::as_str", () => {
  const rust = rustAsStr("src/model.rs", "Permission").map((c) => c.wire);
  assert.equal(rust.length, 16);
  assert.deepEqual(sorted(literals("Permission")), sorted(rust));
});

test("Command has every op of src/command.rs with its fields and their optionality", () => {
  const rust = rustCommands();
  const mine = dtsCommands();
  assert.deepEqual(sorted(Object.keys(mine)), sorted(Object.keys(rust)));
  for (const op of Object.keys(rust)) assert.deepEqual(mine[op], rust[op], `fields of ${op}`);
  assert.deepEqual(sorted(literals("Action")), ["control", "view"]);
});

test("the runtime exports exactly the values index.d.ts declares, in every entry", () => {
  const values = sorted([...exported].filter(([, k]) => k === "value").map(([n]) => n));
  assert.deepEqual(sorted(Object.keys(node)), values, "node entry");
  assert.deepEqual(sorted(Object.keys(web)), values, "web entry");
  // The workerd entry imports a .wasm module (workerd only): its export statements are read.
  const workerd = read("pkg/workerd.js");
  const names = [
    ...[...workerd.matchAll(/^export (?:const|function|async function|class) (\w+)/gm)].map((m) => m[1]),
    ...[...workerd.matchAll(/^export \{([^}]+)\}/gm)].flatMap((m) => m[1].split(",").map((s) => s.trim())),
    ...(/^export default /m.test(workerd) ? ["default"] : []),
  ];
  assert.deepEqual(sorted(names), values, "workerd entry");
  assert.equal(typeof node.FleetgateError, "function");
  assert.ok(new node.FleetgateError("EXPIRED", "x") instanceof Error);
  assert.equal(node.FleetgateError, web.FleetgateError, "one FleetgateError class for every entry");
});

test("PolicyEngine's members in index.d.ts are exactly the runtime's", () => {
  const { instance, statics } = classMembers("PolicyEngine");
  const proto = Object.getOwnPropertyNames(node.PolicyEngine.prototype).filter((n) => n !== "constructor");
  const symbols = Object.getOwnPropertySymbols(node.PolicyEngine.prototype).map((s) => (s === Symbol.dispose ? "[Symbol.dispose]" : String(s)));
  assert.deepEqual(instance, sorted([...proto, ...symbols]));
  const own = Object.getOwnPropertyNames(node.PolicyEngine).filter((n) => !["length", "name", "prototype"].includes(n));
  assert.deepEqual(statics, sorted(own));
  const errMembers = classMembers("FleetgateError").instance;
  assert.deepEqual(errMembers, ["code", "name"]);
});

test("the JS sources throw only codes of ErrorCode; js/ and pkg/ agree; SCRATCH matches src/wasm.rs", () => {
  const codes = new Set(literals("ErrorCode"));
  const files = ["engine.js", "web.js", "node.mjs", "workerd.js", "index.d.ts", "sync.js", "sync-node.mjs", "sync-web.js", "sync-workerd.js", "sync.d.ts", "react.js", "react.d.ts"];
  for (const f of files.map((x) => `js/${x}`)) {
    const src = read(f);
    for (const m of src.matchAll(/new FleetgateError\("(\w+)"/g)) assert.ok(codes.has(m[1]), `${f} throws ${m[1]}`);
    assert.equal(read(`pkg/${f.slice(3)}`), src, `pkg/${f.slice(3)} is the build of ${f} (run scripts/build-pkg.sh)`);
  }
  const rust = read("src/wasm.rs").match(/const SCRATCH: usize = (\d+);/);
  const js = read("js/engine.js").match(/const SCRATCH = (\d+);/);
  assert.ok(rust && js, "SCRATCH declared on both sides");
  assert.equal(js[1], rust[1], "the scratch buffer size of js/engine.js and src/wasm.rs");
});

test("fleetgate/sync exports exactly what sync.d.ts declares, in every entry", async () => {
  const src = read("pkg/sync.d.ts");
  const declared = sorted([...src.matchAll(/^export (?:class|function|const) (\w+)/gm)].map((m) => m[1]));
  assert.deepEqual(declared, ["SyncError", "createSync"]);
  for (const entry of ["sync-node.mjs", "sync-web.js"]) {
    const mod = await import(`../../pkg/${entry}`);
    assert.deepEqual(sorted(Object.keys(mod)), declared, entry);
  }
  const workerd = read("pkg/sync-workerd.js");
  const names = [...workerd.matchAll(/^export (?:const|function|class) (\w+)/gm), ...workerd.matchAll(/^export \{ (\w+) \}/gm)].map((m) => m[1]);
  assert.deepEqual(sorted(names), declared, "sync-workerd.js");
  const pkg = JSON.parse(read("pkg/package.json"));
  assert.deepEqual(Object.keys(pkg.exports["./sync"]), ["types", "workerd", "node", "default"]);
});

test("fleetgate/react exports exactly what react.d.ts declares; React is an optional peer", async () => {
  const src = read("pkg/react.d.ts");
  const declared = sorted([...src.matchAll(/^export (?:class|function|const) (\w+)/gm)].map((m) => m[1]));
  assert.deepEqual(declared, ["FleetgateProvider", "useCan", "useDecision", "useExplain", "useFleetgate", "useVisibleDevices"]);
  const mod = await import("../../pkg/react.js");
  assert.deepEqual(sorted(Object.keys(mod)), declared, "react.js");
  const pkg = JSON.parse(read("pkg/package.json"));
  assert.deepEqual(pkg.exports["./react"], { types: "./react.d.ts", default: "./react.js" });
  assert.ok(pkg.files.includes("react.js") && pkg.files.includes("react.d.ts"), "react files in the package");
  assert.deepEqual(pkg.peerDependencies, { react: ">=18" });
  assert.deepEqual(pkg.peerDependenciesMeta, { react: { optional: true } });
  assert.equal(pkg.dependencies, undefined, "no runtime dependencies");
});
