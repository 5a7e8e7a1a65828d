//! Replays every conformance vector in `tests/vectors/*.json` against the native engine.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;

use fleetgate::signed::VerifyOptions;
use fleetgate::{Action, Command, Engine, Error};
use serde_json::{json, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("\u{0}not-a-string")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|x| s(x).to_owned()).collect()).unwrap_or_default()
}

/// A JSON argument as text: a string is raw text (possibly malformed), anything else is serialized.
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn action(v: Option<&Value>) -> Action {
    v.and_then(Value::as_str).and_then(Action::parse).unwrap_or(Action::View)
}

/// A key set argument (`{keyId: publicKey}`).
fn keys(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("bad key set {v}: {e}"))
}

/// `options.now` (required in vectors: they run on a fixed clock).
fn now(opts: &Value) -> u64 {
    opts.get("now").and_then(Value::as_u64).unwrap_or_else(|| panic!("options without `now`: {opts}"))
}

/// What the signed calls expect: the revision and the signed expiry.
fn signed_state(e: &Engine) -> Value {
    json!({"revision": e.revision(), "expiresAt": e.signed_expires_at()})
}

/// Runs one call; returns its JSON result or the error.
fn call(engine: &mut Option<Engine>, name: &str, args: &[Value]) -> Result<Value, Error> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    match name {
        "fromJson" => {
            let e = Engine::from_json(&text(&arg(0)))?;
            return Ok(json!(e.revision()));
        }
        "fromSigned" => {
            let opts = arg(2);
            let min_revision = opts.get("minRevision").and_then(Value::as_u64);
            let e =
                Engine::from_signed(&text(&arg(0)), &keys(&arg(1)), VerifyOptions { now: now(&opts), min_revision })?;
            let state = signed_state(&e);
            *engine = Some(e);
            return Ok(state);
        }
        "verifyToken" => {
            let c = fleetgate::verify_token(s(&arg(0)), &keys(&arg(1)), now(&arg(2)))?;
            return Ok(json!({"user": c.sub, "session": c.sid, "expiresAt": c.exp}));
        }
        _ => {}
    }
    let Some(e) = engine.as_mut() else { panic!("no snapshot loaded for call {name}") };
    Ok(match name {
        "revision" => json!(e.revision()),
        "expiresAt" => json!(e.signed_expires_at()),
        "applySignedDelta" => {
            e.apply_signed_delta(&text(&arg(0)), &keys(&arg(1)), now(&arg(2)))?;
            signed_state(e)
        }
        "canView" => json!(e.can_view(s(&arg(0)), s(&arg(1)))),
        "canControl" => json!(e.can_control(s(&arg(0)), s(&arg(1)))),
        "explain" => serde_json::to_value(e.explain(s(&arg(0)), s(&arg(1)), action(args.get(2)))).unwrap(),
        "visibleDevices" => {
            let opts = arg(1);
            let list = e.visible_devices(
                s(&arg(0)),
                action(opts.get("action")),
                opts.get("activeOrg").and_then(Value::as_str),
            )?;
            json!(list)
        }
        "filterDevices" => json!(e.filter_devices(s(&arg(0)), &strings(&arg(1)), action(args.get(2)))),
        "switchableOrgs" => json!(e.switchable_orgs(s(&arg(0)))),
        "permissionsIn" => json!(e.permissions_in(s(&arg(0)), s(&arg(1))).names()),
        "applyDelta" => {
            e.apply_delta_json(&text(&arg(0)))?;
            Value::Null
        }
        "toJson" => serde_json::to_value(e.to_doc()).unwrap(),
        "decide" => {
            let cmd = Command::parse(&text(&arg(1)))?;
            serde_json::to_value(e.decide(s(&arg(0)), &cmd)).unwrap()
        }
        "preview" => {
            let cmd = Command::parse(&text(&arg(1)))?;
            serde_json::to_value(e.preview(s(&arg(0)), &cmd)).unwrap()
        }
        "applyCommand" => {
            let cmd = Command::parse(&text(&arg(1)))?;
            let (decision, _) = e.apply_command(s(&arg(0)), &cmd)?;
            serde_json::to_value(decision).unwrap()
        }
        "project" => {
            let doc = e.project(s(&arg(0)));
            // A projection always loads as a snapshot of its own.
            Engine::from_doc(doc.clone()).unwrap_or_else(|err| panic!("projection does not load: {err}"));
            let value = serde_json::to_value(doc).unwrap();
            // The server's direct JSON writer says exactly the same.
            let direct: Value = serde_json::from_str(&e.project_json(s(&arg(0)))).unwrap();
            assert_eq!(direct, value, "project_json differs from project");
            value
        }
        other => panic!("unknown call `{other}`"),
    })
}

fn replay(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut engine = match file.get("snapshot") {
        Some(Value::Null) | None => None,
        Some(snap) => Some(Engine::from_json(&snap.to_string()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))),
    };
    let cases = file["cases"].as_array().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let name = case["call"].as_str().unwrap();
        let args = case.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
        let before = engine.as_ref().map(|e| (e.to_json(), e.signed_expires_at()));
        let got = call(&mut engine, name, &args);
        let at =
            format!("{} case {i} ({name} {})", path.display(), case.get("name").and_then(Value::as_str).unwrap_or(""));
        match (got, case.get("error")) {
            (Ok(v), None) => {
                if let Some(want) = case.get("expect") {
                    assert_eq!(&v, want, "{at}");
                }
            }
            (Ok(v), Some(code)) => panic!("{at}: expected error {code}, got {v}"),
            (Err(e), None) => panic!("{at}: unexpected error {e}"),
            (Err(e), Some(code)) => {
                assert_eq!(e.code(), code.as_str().unwrap(), "{at}: {e}");
                if let Some(m) = case.get("errorMentions").and_then(Value::as_str) {
                    assert!(e.message().contains(m), "{at}: message `{}` does not mention `{m}`", e.message());
                }
                // A failed call leaves the engine exactly as it was.
                let after = engine.as_ref().map(|e| (e.to_json(), e.signed_expires_at()));
                assert_eq!(after, before, "{at}: state changed by a failed call");
            }
        }
    }
    cases.len()
}

#[test]
fn conformance_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no vectors in {}", dir.display());
    let total: usize = files.iter().map(|f| replay(f)).sum();
    println!("replayed {total} vector cases from {} files", files.len());
    assert!(total >= 150, "only {total} vector cases");
}
