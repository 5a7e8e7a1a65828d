//! The WebAssembly boundary: the only file that knows wasm-bindgen and js-sys. A thin handle
//! around [`Engine`]; the JS wrapper in `js/` gives it the exact API of SPEC §6.
//!
//! Hot paths (checks and lists) take user and device *slots*: the JS wrapper resolves an id to
//! its slot once (writing the id's bytes into a scratch buffer, ids are ASCII by definition)
//! and caches it in a null-prototype object, since slots are stable for an engine's life (a user
//! who is not active is cached as denying until the next delta). Lists come back as
//! device slots in a buffer the JS side reads in place and maps to cached id strings: no
//! allocation, hashing or UTF-8 round trip per call.

use std::collections::BTreeMap;

use wasm_bindgen::prelude::*;

use crate::command::Command;
use crate::index::{DeviceSlot, Slot, UserSlot};
use crate::model::Action;
use crate::signed::VerifyOptions;
use crate::{Engine, Error};

/// Bytes in the scratch buffer: two ids of at most 128 bytes, with room to spare.
const SCRATCH: usize = 512;

/// "No slot", as the JS side sees it (`u32::MAX`).
const NO_SLOT: u32 = crate::index::NONE;
/// `lookup`'s answer for a user who is not active.
const INACTIVE: u32 = NO_SLOT - 1;

/// Converts an engine error into a JS `Error` with a `code` property.
fn js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(e.message());
    let _ = js_sys::Reflect::set(&err, &JsValue::from_str("code"), &JsValue::from_str(e.code()));
    err.set_name("FleetgateError");
    err.into()
}

fn err(code: crate::ErrorCode, msg: &str) -> JsValue {
    js_error(&Error::new(code, msg))
}

/// JSON text of a string or a JSON-able JS value.
fn text_of(v: &JsValue, code: crate::ErrorCode, what: &str) -> Result<String, JsValue> {
    if let Some(s) = v.as_string() {
        return Ok(s);
    }
    if v.is_undefined() || v.is_function() || v.is_symbol() || v.is_bigint() {
        return Err(err(code, &format!("{what} must be a JSON string or a plain object")));
    }
    match js_sys::JSON::stringify(v) {
        Ok(s) => s.as_string().ok_or_else(|| err(code, &format!("{what} cannot be written as JSON"))),
        Err(_) => Err(err(code, &format!("{what} cannot be written as JSON (a cycle or a BigInt?)"))),
    }
}

// Object-shaped values at the boundary (measured both ways with bench/boundary.mjs; numbers and
// the reasons in README, "The wasm boundary"):
// - decisions (`explain`, `decide`) and previews are built as JS values by serde-wasm-bindgen;
// - documents — snapshots (`toJson`), projections (`project`) and deltas (`commandDelta`) — cross
//   as the JSON text the server sends, parsed by `JSON.parse`: for snapshots and projections
//   that is 1.4–1.9x faster than building them value by value, and deltas (a tie either way) then
//   share that serializer instead of needing both (~1 KB of the 150 KB budget);
// - commands come in as JSON text, so their errors keep naming paths (`permissions[2]`).
// Both keep the JS-visible shapes of SPEC §6: plain objects, integers as numbers, `null`.

/// A decision or a preview as a JS value, by serde-wasm-bindgen's JSON-compatible serializer:
/// maps become plain objects, integers numbers (every integer the engine writes is below 2^53)
/// and `None` `null`, so it deep-equals the JSON of the same value.
fn to_js<T: serde::Serialize + ?Sized>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(JsValue::from)
}

/// A document (snapshot, projection, delta) as JSON text parsed by the JS engine's `JSON.parse`.
fn to_js_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<JsValue, JsValue> {
    let text = serde_json::to_string(v).map_err(|e| err(crate::ErrorCode::InvalidJson, &e.to_string()))?;
    js_sys::JSON::parse(&text).map_err(|_| err(crate::ErrorCode::InvalidJson, "engine produced invalid JSON"))
}

/// A key set: an object mapping key ids to base64url public keys.
fn keys_of(keys: &JsValue) -> Result<BTreeMap<String, String>, JsValue> {
    let bad = || err(crate::ErrorCode::InvalidArgument, "keys must map key ids to base64url public keys");
    if !keys.is_object() || js_sys::Array::is_array(keys) {
        return Err(bad());
    }
    let text = js_sys::JSON::stringify(keys).ok().and_then(|s| s.as_string()).ok_or_else(bad)?;
    serde_json::from_str(&text).map_err(|_| bad())
}

/// Unix seconds from a JS number: finite and not negative (fractions are dropped).
fn seconds(now: f64) -> Result<u64, JsValue> {
    if now.is_finite() && now >= 0.0 {
        Ok(now as u64)
    } else {
        Err(err(crate::ErrorCode::InvalidArgument, "`now` must be a finite number of unix seconds"))
    }
}

fn action_of(code: u32) -> Action {
    if code == 1 {
        Action::Control
    } else {
        Action::View
    }
}

/// Installs the panic hook once (diagnostics only: the engine does not panic on input).
#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(feature = "console_error_panic_hook")]
    console_error_panic_hook::set_once();
}

/// Every permission id and the name a dashboard shows for it (SPEC §2, the seed's names), in
/// ascending id order: `id:label` lines (ids hold no `:` or newline); the JS wrapper makes the
/// object.
#[wasm_bindgen(js_name = permissionLabels)]
pub fn permission_labels() -> String {
    let mut out = String::new();
    for p in crate::Permission::ALL {
        out.push_str(p.as_str());
        out.push(':');
        out.push_str(p.label());
        out.push('\n');
    }
    out
}

/// The wasm instance's memory, for the JS wrapper's scratch-buffer writes.
#[wasm_bindgen(js_name = wasmMemory)]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// The engine handle the JS `PolicyEngine` wraps.
#[wasm_bindgen]
pub struct EngineCore {
    engine: Engine,
    /// Where the JS side writes an id's bytes to resolve it (`SCRATCH` bytes; ids are ≤ 128).
    scratch: Vec<u8>,
    /// Where the JS side writes a list of device slots for `filterSlots` (grown on request).
    slots: Vec<u32>,
    /// The last list of device slots, read in place by the JS side (as `u32`s: the slot
    /// types are `repr(transparent)`).
    out: Vec<DeviceSlot>,
}

impl EngineCore {
    fn new(engine: Engine) -> Self {
        Self { engine, scratch: vec![0; SCRATCH], slots: Vec::new(), out: Vec::new() }
    }

    /// The id the JS side wrote into the scratch buffer (`len` bytes).
    fn scratch_id(&self, len: u32) -> &[u8] {
        self.scratch.get(..len as usize).unwrap_or(&[])
    }
}

#[wasm_bindgen]
impl EngineCore {
    /// Loads a snapshot from JSON text or a plain object (SPEC §4.1).
    #[wasm_bindgen(js_name = fromJson)]
    pub fn from_json(snapshot: &JsValue) -> Result<EngineCore, JsValue> {
        let text = text_of(snapshot, crate::ErrorCode::InvalidSnapshot, "snapshot")?;
        Engine::from_json(&text).map(EngineCore::new).map_err(|e| js_error(&e))
    }

    /// Loads a snapshot from its UTF-8 bytes. The JS side encodes strings with `TextEncoder`,
    /// several times faster for a large snapshot than passing the string itself.
    #[wasm_bindgen(js_name = fromUtf8)]
    pub fn from_utf8(bytes: &[u8]) -> Result<EngineCore, JsValue> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| err(crate::ErrorCode::InvalidJson, "snapshot is not UTF-8"))?;
        Engine::from_json(text).map(EngineCore::new).map_err(|e| js_error(&e))
    }

    /// Loads a signed envelope (SPEC §4.4); `now` in unix seconds, `min_revision` < 0 for none.
    #[wasm_bindgen(js_name = fromSigned)]
    pub fn from_signed(envelope: &JsValue, keys: &JsValue, now: f64, min_revision: f64) -> Result<EngineCore, JsValue> {
        let text = text_of(envelope, crate::ErrorCode::InvalidSnapshot, "envelope")?;
        let opts = VerifyOptions {
            now: seconds(now)?,
            min_revision: (min_revision.is_finite() && min_revision >= 0.0).then_some(min_revision as u64),
        };
        Engine::from_signed(&text, &keys_of(keys)?, opts).map(EngineCore::new).map_err(|e| js_error(&e))
    }

    /// Verifies an access token (SPEC §4.5) at `now` (unix seconds); returns
    /// `{user, session, expiresAt}`.
    #[wasm_bindgen(js_name = verifyToken)]
    pub fn verify_token(token: &JsValue, keys: &JsValue, now: f64) -> Result<JsValue, JsValue> {
        let token =
            token.as_string().ok_or_else(|| err(crate::ErrorCode::InvalidArgument, "token must be a string"))?;
        let claims = crate::token::verify_token(&token, &keys_of(keys)?, seconds(now)?).map_err(|e| js_error(&e))?;
        // Built directly: a serializer for this one small object would cost more wasm.
        let who = js_sys::Object::new();
        let set = |k: &str, v: JsValue| js_sys::Reflect::set(&who, &JsValue::from_str(k), &v).map(|_| ());
        set("user", JsValue::from_str(&claims.sub))?;
        set("session", JsValue::from_str(&claims.sid))?;
        set("expiresAt", JsValue::from_f64(claims.exp as f64))?;
        Ok(who.into())
    }

    /// Where the JS side writes ids.
    #[wasm_bindgen(js_name = scratchPtr)]
    pub fn scratch_ptr(&self) -> u32 {
        self.scratch.as_ptr() as usize as u32
    }

    /// The revision.
    #[wasm_bindgen(getter)]
    pub fn revision(&self) -> f64 {
        self.engine.revision() as f64
    }

    /// The `expiresAt` of the last signed snapshot or delta accepted (`undefined` when none).
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> Option<f64> {
        self.engine.signed_expires_at().map(|t| t as f64)
    }

    /// Applies a signed delta atomically (SPEC §4.4) at `now` (unix seconds).
    #[wasm_bindgen(js_name = applySignedDelta)]
    pub fn apply_signed_delta(&mut self, envelope: &JsValue, keys: &JsValue, now: f64) -> Result<(), JsValue> {
        let text = text_of(envelope, crate::ErrorCode::InvalidDelta, "envelope")?;
        let keys = keys_of(keys)?;
        self.engine.apply_signed_delta(&text, &keys, seconds(now)?).map_err(|e| js_error(&e))
    }

    /// The slot of the user id (kind 0) or device id (kind 1) written into scratch (`len`
    /// bytes), or `u32::MAX` when the id was never seen. A slot names the same id for the
    /// engine's life (it may be vacant: the entity was removed, and checks then deny). A user
    /// who is not active (pending or suspended) gives `u32::MAX - 1`: every check by slot would
    /// deny them, so the JS side answers without calling in, until a delta changes the users.
    pub fn lookup(&self, kind: u32, len: u32) -> u32 {
        let id = self.scratch_id(len);
        let ix = &self.engine.ix;
        if id.is_empty() {
            return NO_SLOT;
        }
        if kind == 0 {
            return match ix.user_ids.get_bytes(id) {
                None => NO_SLOT,
                Some(u) if ix.is_active(u) => u.raw(),
                Some(_) => INACTIVE,
            };
        }
        ix.dev_ids.get_bytes(id).map_or(NO_SLOT, Slot::raw)
    }

    /// Whether user slot `user` may do `action` (0 view, 1 control) on device slot `device`.
    /// Any numbers are safe: an unknown or vacant slot denies.
    #[wasm_bindgen(js_name = canSlots)]
    pub fn can_slots(&self, user: u32, device: u32, action: u32) -> bool {
        self.engine.can_slots(UserSlot::from_raw(user), DeviceSlot::from_raw(device), action_of(action))
    }

    /// Explains a decision.
    pub fn explain(&self, user: &str, device: &str, action: u32) -> Result<JsValue, JsValue> {
        to_js(&self.engine.explain(user, device, action_of(action)))
    }

    /// The device slots user slot `user` may view (or control), ascending by id, into the out
    /// buffer (`outPtr`); returns how many. When that is every device, returns `deviceCount`
    /// and leaves the buffer empty: the JS side keeps that list (`deviceSlotsInOrder`).
    #[wasm_bindgen(js_name = visibleOfSlot)]
    pub fn visible_of_slot(&mut self, user: u32, action: u32) -> u32 {
        let Self { engine, out, .. } = self;
        if engine.visible_of_slot(UserSlot::from_raw(user), action_of(action), None, false, out) {
            return engine.ix.device_count as u32;
        }
        out.len() as u32
    }

    /// Every device slot in id order into the out buffer; returns how many.
    #[wasm_bindgen(js_name = deviceSlotsInOrder)]
    pub fn device_slots_in_order(&mut self) -> u32 {
        self.out.clear();
        self.out.extend_from_slice(&self.engine.ix.by_id);
        self.out.len() as u32
    }

    /// [`EngineCore::visible_of_slot`] by user id within the subtree of `active_org`, which
    /// must be switchable for the user (`NOT_SWITCHABLE` otherwise).
    #[wasm_bindgen(js_name = visibleInOrg)]
    pub fn visible_in_org(&mut self, user: &str, action: u32, active_org: &str) -> Result<u32, JsValue> {
        let Self { engine, out, .. } = self;
        engine.visible_slots_into(user, action_of(action), Some(active_org), out).map_err(|e| js_error(&e))?;
        Ok(out.len() as u32)
    }

    /// How many devices there are: a list this long is every device, in id order.
    #[wasm_bindgen(getter, js_name = deviceCount)]
    pub fn device_count(&self) -> u32 {
        self.engine.ix.device_count as u32
    }

    /// Where the last list of device slots is (valid until the next call into the engine).
    #[wasm_bindgen(js_name = outPtr)]
    pub fn out_ptr(&self) -> u32 {
        self.out.as_ptr() as usize as u32
    }

    /// The ids of device slots `start..`, joined by newlines (ids never contain one). Slot
    /// numbers are stable for the engine's life, so the JS side caches them.
    #[wasm_bindgen(js_name = deviceNamesFrom)]
    pub fn device_names_from(&self, start: u32) -> String {
        let ids = &self.engine.ix.dev_ids;
        let mut out = String::with_capacity(ids.len().saturating_sub(start as usize) * 12);
        for d in start..ids.len() as u32 {
            if d > start {
                out.push('\n');
            }
            out.push_str(ids.name(DeviceSlot::from_raw(d)));
        }
        out
    }

    /// Makes room for `count` device slots in the slot buffer and returns its address. Growing
    /// may grow the wasm memory, so the JS side re-reads the memory buffer afterwards.
    #[wasm_bindgen(js_name = slotsReserve)]
    pub fn slots_reserve(&mut self, count: u32) -> u32 {
        let count = count as usize;
        if self.slots.len() < count {
            self.slots.resize(count, NO_SLOT);
        }
        self.slots.as_ptr() as usize as u32
    }

    /// `filterDevices` on the slot buffer: the first `count` device slots (`u32::MAX` for an
    /// unknown id) are overwritten with 1 where user slot `user` may do `action`, else 0;
    /// returns how many are 1.
    #[wasm_bindgen(js_name = filterSlots)]
    pub fn filter_slots(&mut self, user: u32, count: u32, action: u32) -> u32 {
        let Self { engine, slots, .. } = self;
        let action = action_of(action);
        let user = UserSlot::from_raw(user);
        let active = engine.ix.is_active(user);
        let mut yes = 0;
        for d in slots.iter_mut().take(count as usize) {
            let ok = active && engine.can_slots(user, DeviceSlot::from_raw(*d), action);
            *d = u32::from(ok);
            yes += u32::from(ok);
        }
        yes
    }

    /// Switchable orgs, ascending.
    #[wasm_bindgen(js_name = switchableOrgs)]
    pub fn switchable_orgs(&self, user: &str) -> Vec<String> {
        self.engine.switchable_orgs(user).into_iter().map(str::to_owned).collect()
    }

    /// Permissions in an org, ascending.
    #[wasm_bindgen(js_name = permissionsIn)]
    pub fn permissions_in(&self, user: &str, org: &str) -> Vec<String> {
        self.engine.permissions_in(user, org).names().into_iter().map(str::to_owned).collect()
    }

    /// Decides a command (SPEC §5) without changing anything.
    pub fn decide(&self, actor: &str, command: &JsValue) -> Result<JsValue, JsValue> {
        let cmd = command_of(command)?;
        to_js(&self.engine.decide(actor, &cmd))
    }

    /// Previews a command: decision, gained and lost accesses.
    pub fn preview(&mut self, actor: &str, command: &JsValue) -> Result<JsValue, JsValue> {
        let cmd = command_of(command)?;
        to_js(&self.engine.preview(actor, &cmd))
    }

    /// The delta an allowed command causes, or `null` when denied.
    #[wasm_bindgen(js_name = commandDelta)]
    pub fn command_delta(&self, actor: &str, command: &JsValue) -> Result<JsValue, JsValue> {
        let cmd = command_of(command)?;
        let (_, delta) = self.engine.command_delta(actor, &cmd).map_err(|e| js_error(&e))?;
        match delta {
            Some(d) => to_js_text(&d),
            None => Ok(JsValue::NULL),
        }
    }

    /// Applies a delta atomically (SPEC §4.2).
    #[wasm_bindgen(js_name = applyDelta)]
    pub fn apply_delta(&mut self, delta: &JsValue) -> Result<(), JsValue> {
        let text = text_of(delta, crate::ErrorCode::InvalidDelta, "delta")?;
        self.engine.apply_delta_json(&text).map_err(|e| js_error(&e))
    }

    /// The projection for a viewer (SPEC §4.3).
    pub fn project(&self, viewer: &str) -> Result<JsValue, JsValue> {
        to_js_text(&self.engine.project_view(viewer))
    }

    /// The snapshot as a plain object.
    #[wasm_bindgen(js_name = toJson)]
    pub fn to_json(&self) -> Result<JsValue, JsValue> {
        to_js_text(&self.engine.snapshot_view())
    }
}

/// A command from JSON text or a JS object, read as JSON text: the parser's positions give every
/// error its path (`permissions[2]`) through the same `ObjectOnly`/tagged readers as the server,
/// which a JS-value deserializer cannot (serde-wasm-bindgen's would also add ~11 KB gzipped).
fn command_of(command: &JsValue) -> Result<Command, JsValue> {
    let text = text_of(command, crate::ErrorCode::InvalidCommand, "command")?;
    Command::parse(&text).map_err(|e| js_error(&e))
}
