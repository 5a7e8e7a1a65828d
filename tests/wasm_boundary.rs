//! Boundary tests run inside wasm by `wasm-pack test --node`: errors become JS `Error`s with a
//! `code`, bad input never traps, and the handle keeps answering after a failure.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use fleetgate::wasm::EngineCore;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

const WORLD: &str = r#"{"format":"fleetgate/snapshot@1","revision":3,
  "orgs":[{"id":"acme","name":"ACME"},{"id":"east","name":"East","parent":"acme"}],
  "users":[{"id":"alice","email":"a@x.test","name":"A","status":"active"},{"id":"bob","email":"b@x.test","name":"B","status":"active"}],
  "memberships":[{"user":"alice","org":"acme","role":"Admin"},{"user":"bob","org":"east","role":"User"}],
  "devices":[{"id":"t1","name":"T1","org":"east","owner":"bob"},{"id":"t2","name":"T2","org":"acme"}]}"#;

fn code_of(err: JsValue) -> String {
    assert!(err.is_instance_of::<js_sys::Error>(), "errors are JS Error objects");
    js_sys::Reflect::get(&err, &JsValue::from_str("code")).unwrap().as_string().unwrap()
}

fn memory() -> js_sys::Uint8Array {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().dyn_into().unwrap();
    js_sys::Uint8Array::new(&memory.buffer())
}

fn read(ptr: u32, len: u32) -> Vec<u8> {
    // A copy on the JS side first: allocating the Vec may grow (and detach) the wasm memory.
    memory().slice(ptr, ptr + len).to_vec()
}

/// What the JS wrapper does for `filterDevices`: the user, then each id behind its length byte.
fn filter(e: &mut EngineCore, user: &str, ids: &[&str], action: u32) -> Vec<u8> {
    let mut bytes = user.as_bytes().to_vec();
    for id in ids {
        bytes.push(id.len() as u8);
        bytes.extend_from_slice(id.as_bytes());
    }
    let ptr = e.scratch_reserve(bytes.len() as u32);
    memory().subarray(ptr, ptr + bytes.len() as u32).copy_from(&bytes);
    let allowed = e.filter_scratch(user.len() as u32, ids.len() as u32, action);
    let mask = read(e.scratch_ptr(), ids.len() as u32);
    assert_eq!(allowed as usize, mask.iter().filter(|b| **b == 1).count(), "the count matches the mask");
    mask
}

fn engine() -> EngineCore {
    EngineCore::from_json(&JsValue::from_str(WORLD)).unwrap()
}

#[wasm_bindgen_test]
fn loads_from_text_and_object() {
    let e = engine();
    assert_eq!(e.revision(), 3.0);
    let obj = js_sys::JSON::parse(WORLD).unwrap();
    assert_eq!(EngineCore::from_json(&obj).unwrap().revision(), 3.0);
}

#[wasm_bindgen_test]
fn errors_carry_codes() {
    assert_eq!(code_of(EngineCore::from_json(&JsValue::from_str("{")).err().unwrap()), "INVALID_JSON");
    assert_eq!(code_of(EngineCore::from_json(&JsValue::UNDEFINED).err().unwrap()), "INVALID_SNAPSHOT");
    assert_eq!(code_of(EngineCore::from_json(&JsValue::from_f64(1.0)).err().unwrap()), "INVALID_SNAPSHOT");
    let bad_owner = WORLD.replace(r#""owner":"bob""#, r#""owner":"alice""#);
    assert_eq!(code_of(EngineCore::from_json(&JsValue::from_str(&bad_owner)).err().unwrap()), "OWNER_NOT_MEMBER");
    let e = engine();
    assert_eq!(code_of(e.visible_slots("alice", 0, Some("nowhere".into())).err().unwrap()), "NOT_SWITCHABLE");
    assert_eq!(code_of(e.decide("alice", &JsValue::from_str("{\"op\":\"fly\"}")).err().unwrap()), "INVALID_COMMAND");
}

/// The JSON text of a JS value, for comparing what crossed with what the native engine answers.
fn json(v: &JsValue) -> String {
    js_sys::JSON::stringify(v).unwrap().as_string().unwrap()
}

#[wasm_bindgen_test]
fn values_cross_as_plain_json_shaped_objects() {
    let mut e = engine();
    let native = fleetgate::Engine::from_json(WORLD).unwrap();
    // Decisions (serde-wasm-bindgen): the native engine's JSON, key for key; a denied check names
    // what it lacks.
    let why = e.explain("bob", "t2", 1).unwrap();
    assert!(why.is_object() && !js_sys::Array::is_array(&why));
    let expect = serde_json::to_string(&native.explain("bob", "t2", fleetgate::Action::Control)).unwrap();
    assert_eq!(json(&why), expect);
    assert_eq!(
        expect,
        r#"{"allowed":false,"code":"DENY_NO_PERMISSION","org":"acme","permission":"devices.org.control"}"#
    );
    // A command as an object and as text: the same decision; a bad one names its path either way.
    let cmd = r#"{"op":"moveDevice","device":"t1","org":"acme"}"#;
    let as_object = e.decide("alice", &js_sys::JSON::parse(cmd).unwrap()).unwrap();
    assert_eq!(json(&as_object), json(&e.decide("alice", &JsValue::from_str(cmd)).unwrap()));
    assert_eq!(json(&as_object), r#"{"allowed":true,"code":"ALLOW"}"#);
    let bad = js_sys::JSON::parse(
        r#"{"op":"setRolePermissions","org":"acme","role":"Staff","permissions":["users.view",5]}"#,
    );
    let err = e.decide("alice", &bad.unwrap()).err().unwrap();
    let message = js_sys::Reflect::get(&err, &JsValue::from_str("message")).unwrap().as_string().unwrap();
    assert!(message.contains("`permissions[1]`"), "{message}");
    let preview = e.preview("alice", &js_sys::JSON::parse(cmd).unwrap()).unwrap();
    let cmd_native = fleetgate::Command::parse(cmd).unwrap();
    let mut native_mut = fleetgate::Engine::from_json(WORLD).unwrap();
    assert_eq!(json(&preview), serde_json::to_string(&native_mut.preview("alice", &cmd_native)).unwrap());
    // Documents (JSON text): the snapshot, with its integers as numbers and `viewer: null`.
    let snap = e.to_json().unwrap();
    let revision = js_sys::Reflect::get(&snap, &JsValue::from_str("revision")).unwrap();
    assert_eq!(revision.as_f64(), Some(3.0));
    assert!(js_sys::Reflect::get(&snap, &JsValue::from_str("viewer")).unwrap().is_null());
    assert_eq!(json(&snap), native.to_json());
    assert_eq!(json(&e.project("bob").unwrap()), native.project_json("bob"));
    let delta = e.command_delta("alice", &JsValue::from_str(cmd)).unwrap();
    assert_eq!(json(&delta), native.command_delta("alice", &cmd_native).unwrap().1.unwrap().to_json());
    assert!(e.command_delta("bob", &JsValue::from_str(cmd)).unwrap().is_null());
}

#[wasm_bindgen_test]
fn lists_and_masks() {
    let mut e = engine();
    let slots = e.visible_slots("alice", 0, None).unwrap();
    let names = e.device_names_from(0);
    let names: Vec<&str> = names.split('\n').collect();
    let ids: Vec<&str> = slots.iter().map(|s| names[*s as usize]).collect();
    assert_eq!(ids, ["t1", "t2"]);
    assert_eq!(
        filter(&mut e, "bob", &["t2", "t1", "ghost", ""], 0),
        [0, 0, 0, 0],
        "User has no permissions by default"
    );
    assert_eq!(filter(&mut e, "alice", &["t2", "t1", "ghost"], 1), [1, 1, 0]);
    assert_eq!(filter(&mut e, "nobody", &["t2", "t1"], 0), [0, 0]);
    // A count past what was written (here: zeros, then the end of the buffer) reads as unknown
    // ids, not a trap; so do lengths past the buffer.
    let ptr = e.scratch_reserve(4096);
    memory().subarray(ptr, ptr + 4096).fill(0, 0, 4096);
    memory().subarray(ptr, ptr + 8).copy_from(b"alice\x02t2");
    assert_eq!(e.filter_scratch(5, 100_000, 1), 1);
    assert_eq!(read(ptr, 3), [1, 0, 0]);
    memory().subarray(ptr, ptr + 7).copy_from(b"alice\xfft");
    assert_eq!(e.filter_scratch(5, 3, 0), 0);
    assert_eq!(e.filter_scratch(u32::MAX, 3, 0), 0);
    assert!(!e.can_scratch(0, 0, 0), "empty scratch ids are unknown");
    assert!(!e.can_scratch(400, 400, 0), "lengths past the scratch buffer are unknown, not a trap");
    assert!(!e.can_scratch(u32::MAX, u32::MAX, 7), "huge lengths neither overflow nor trap");
}

#[wasm_bindgen_test]
fn failed_delta_changes_nothing() {
    let mut e = engine();
    let before = js_sys::JSON::stringify(&e.to_json().unwrap()).unwrap();
    let bad = r#"{"format":"fleetgate/delta@1","from":3,"to":4,"ops":[{"op":"putDevice","device":{"id":"t1","name":"T1","org":"acme","owner":"bob"}}]}"#;
    assert_eq!(code_of(e.apply_delta(&JsValue::from_str(bad)).err().unwrap()), "OWNER_NOT_MEMBER");
    assert_eq!(js_sys::JSON::stringify(&e.to_json().unwrap()).unwrap(), before);
    let good = bad.replace(r#""owner":"bob""#, r#""owner":null"#);
    e.apply_delta(&JsValue::from_str(&good)).unwrap();
    assert_eq!(e.revision(), 4.0);
}

#[wasm_bindgen_test]
fn signed_deltas_and_tokens_cross_the_boundary() {
    use fleetgate::signed::Envelope;
    let secret = [7u8; 32];
    let keys = js_sys::JSON::parse(&format!(r#"{{"k1":"{}"}}"#, Envelope::public_key(&secret))).unwrap();
    let snap = WORLD.replace(r#""revision":3,"#, r#""revision":3,"expiresAt":100,"#);
    let env = Envelope::sign(snap.as_bytes(), "k1", &secret).to_json();
    let mut e = EngineCore::from_signed(&JsValue::from_str(&env), &keys, 10.0, -1.0).unwrap();
    assert_eq!(e.expires_at(), Some(100.0));
    assert_eq!(engine().expires_at(), None, "a plain snapshot has no signed expiry");
    let renewal = r#"{"format":"fleetgate/delta@1","from":3,"to":3,"expiresAt":200,"ops":[]}"#;
    let signed = JsValue::from_str(&Envelope::sign(renewal.as_bytes(), "k1", &secret).to_json());
    assert_eq!(code_of(e.apply_signed_delta(&signed, &keys, f64::NAN).err().unwrap()), "INVALID_ARGUMENT");
    assert_eq!(
        code_of(e.apply_signed_delta(&signed, &JsValue::from_f64(1.0), 10.0).err().unwrap()),
        "INVALID_ARGUMENT"
    );
    assert_eq!(code_of(e.apply_signed_delta(&signed, &keys, 201.0).err().unwrap()), "EXPIRED");
    e.apply_signed_delta(&signed, &keys, 10.0).unwrap();
    assert_eq!((e.revision(), e.expires_at()), (3.0, Some(200.0)));
    let claims =
        fleetgate::TokenClaims { iss: "fleetgate".into(), sub: "alice".into(), sid: "s1".into(), iat: 1000, exp: 1300 };
    let token = JsValue::from_str(&fleetgate::sign_token(&claims, "k1", &secret));
    let who = EngineCore::verify_token(&token, &keys, 1000.0).unwrap();
    assert_eq!(js_sys::JSON::stringify(&who).unwrap(), r#"{"user":"alice","session":"s1","expiresAt":1300}"#);
    assert_eq!(code_of(EngineCore::verify_token(&token, &keys, 1301.0).err().unwrap()), "EXPIRED");
    assert_eq!(
        code_of(EngineCore::verify_token(&JsValue::from_f64(1.0), &keys, 1.0).err().unwrap()),
        "INVALID_ARGUMENT"
    );
    assert_eq!(code_of(EngineCore::verify_token(&JsValue::from_str("x"), &keys, 1.0).err().unwrap()), "BAD_TOKEN");
}
