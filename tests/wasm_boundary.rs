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

fn words(ptr: u32, len: u32) -> Vec<u32> {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().dyn_into().unwrap();
    // A copy on the JS side first: allocating the Vec may grow (and detach) the wasm memory.
    js_sys::Uint32Array::new_with_byte_offset_and_length(&memory.buffer(), ptr, len).slice(0, len).to_vec()
}

/// What the JS wrapper does to resolve an id: its bytes into scratch, then `lookup`.
fn slot(e: &EngineCore, kind: u32, id: &str) -> u32 {
    let ptr = e.scratch_ptr();
    memory().subarray(ptr, ptr + id.len() as u32).copy_from(id.as_bytes());
    e.lookup(kind, id.len() as u32)
}

/// What the JS wrapper does for `filterDevices`: the device slots into the slot buffer, then
/// `filterSlots` overwrites them with the mask.
fn filter(e: &mut EngineCore, user: &str, ids: &[&str], action: u32) -> Vec<u32> {
    let u = slot(e, 0, user);
    let slots: Vec<u32> = ids.iter().map(|id| slot(e, 1, id)).collect();
    let ptr = e.slots_reserve(slots.len() as u32);
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().dyn_into().unwrap();
    js_sys::Uint32Array::new_with_byte_offset_and_length(&memory.buffer(), ptr, slots.len() as u32).copy_from(&slots);
    let allowed = e.filter_slots(u, slots.len() as u32, action);
    let mask = words(ptr, slots.len() as u32);
    assert_eq!(allowed as usize, mask.iter().filter(|b| **b == 1).count(), "the count matches the mask");
    mask
}

/// The ids of the last list, through `deviceNamesFrom` as the JS wrapper maps them (a list of
/// every device comes from `deviceSlotsInOrder`, as the wrapper does).
fn listed(e: &mut EngineCore, n: u32) -> Vec<String> {
    let n = if n == e.device_count() { e.device_slots_in_order() } else { n };
    let names = e.device_names_from(0);
    let names: Vec<&str> = names.split('\n').collect();
    words(e.out_ptr(), n).iter().map(|s| names[*s as usize].to_owned()).collect()
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
    let mut e = engine();
    assert_eq!(code_of(e.visible_in_org("alice", 0, "nowhere").err().unwrap()), "NOT_SWITCHABLE");
    assert_eq!(code_of(e.visible_in_org("nobody", 0, "acme").err().unwrap()), "NOT_SWITCHABLE");
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
    let alice = slot(&e, 0, "alice");
    let n = e.visible_of_slot(alice, 0);
    assert_eq!(listed(&mut e, n), ["t1", "t2"]);
    let n = e.visible_in_org("alice", 0, "east").unwrap();
    assert_eq!(listed(&mut e, n), ["t1"]);
    assert_eq!(e.visible_of_slot(u32::MAX, 0), 0, "an unknown user slot lists nothing");
    assert_eq!(
        filter(&mut e, "bob", &["t2", "t1", "ghost", ""], 0),
        [0, 0, 0, 0],
        "User has no permissions by default"
    );
    assert_eq!(filter(&mut e, "alice", &["t2", "t1", "ghost"], 1), [1, 1, 0]);
    assert_eq!(filter(&mut e, "nobody", &["t2", "t1"], 0), [0, 0]);
    // A count past the slot buffer stops at its end, not a trap; unknown slots deny.
    let ptr = e.slots_reserve(4);
    assert!(ptr != 0);
    assert!(e.filter_slots(alice, 100_000, 1) <= 4);
    assert_eq!(slot(&e, 0, "nobody"), u32::MAX);
    assert_eq!(e.lookup(1, 0), u32::MAX, "an empty id is unknown");
    assert_eq!(e.lookup(1, 400), u32::MAX, "lengths past the scratch buffer are unknown, not a trap");
    assert_eq!(e.lookup(7, u32::MAX), u32::MAX, "huge lengths and odd kinds neither overflow nor trap");
    let t1 = slot(&e, 1, "t1");
    assert!(e.can_slots(alice, t1, 1));
    assert!(!e.can_slots(alice, u32::MAX, 0), "unknown slots deny");
    assert!(!e.can_slots(u32::MAX, t1, 0));
    assert!(!e.can_slots(alice, t1 + 1000, 7));
}

#[wasm_bindgen_test]
fn slots_stay_right_across_deltas() {
    let mut e = engine();
    let (alice, t1) = (slot(&e, 0, "alice"), slot(&e, 1, "t1"));
    let remove = r#"{"format":"fleetgate/delta@1","from":3,"to":4,"ops":[{"op":"removeDevice","id":"t1"}]}"#;
    e.apply_delta(&JsValue::from_str(remove)).unwrap();
    assert!(!e.can_slots(alice, t1, 0), "a removed device's slot denies");
    assert_eq!(filter(&mut e, "alice", &["t1", "t2"], 0), [0, 1]);
    // A failed delta that names new ids forgets them again; a later one gets fresh slots.
    let bad = r#"{"format":"fleetgate/delta@1","from":4,"to":5,"ops":[{"op":"putDevice","device":{"id":"t9","name":"T9","org":"nowhere"}}]}"#;
    assert_eq!(code_of(e.apply_delta(&JsValue::from_str(bad)).err().unwrap()), "UNKNOWN_REFERENCE");
    assert_eq!(slot(&e, 1, "t9"), u32::MAX);
    let add = r#"{"format":"fleetgate/delta@1","from":4,"to":5,"ops":[{"op":"putDevice","device":{"id":"t0","name":"T0","org":"acme"}},{"op":"putDevice","device":{"id":"t1","name":"T1","org":"acme"}}]}"#;
    e.apply_delta(&JsValue::from_str(add)).unwrap();
    assert_eq!(slot(&e, 1, "t1"), t1, "a slot names the same id for the engine's life");
    assert!(e.can_slots(alice, t1, 0));
    let n = e.visible_of_slot(alice, 0);
    assert_eq!(listed(&mut e, n), ["t0", "t1", "t2"], "ascending id order after devices come and go");
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
