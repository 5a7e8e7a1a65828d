//! The WebAssembly boundary: the only file that knows wasm-bindgen and js-sys. A thin handle
//! around [`Engine`]; the JS wrapper in `js/` gives it the exact API of SPEC §6.
//!
//! Hot paths (checks and lists) take ids through a scratch buffer the JS side writes into
//! (ids are ASCII by definition), and lists come back as device slot numbers that the JS side
//! maps to cached strings: no allocation or UTF-8 round trip per call.

use std::collections::BTreeMap;

use wasm_bindgen::prelude::*;

use crate::command::Command;
use crate::model::Action;
use crate::signed::VerifyOptions;
use crate::{Engine, Error};

/// Bytes in the scratch buffer: two ids of at most 128 bytes, with room to spare.
const SCRATCH: usize = 512;

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
    scratch: Vec<u8>,
}

impl EngineCore {
    fn new(engine: Engine) -> Self {
        Self { engine, scratch: vec![0; SCRATCH] }
    }

    /// The two ids the JS side wrote into the scratch buffer.
    fn ids(&self, a: u32, b: u32) -> (&str, &str) {
        let (a, b) = (a as usize, b as usize);
        let first = self.scratch.get(..a).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("");
        let second = a
            .checked_add(b)
            .and_then(|end| self.scratch.get(a..end))
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("");
        (first, second)
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

    /// Check on the ids in scratch (`user` of `ulen` bytes, then `device` of `dlen`); action 0 view, 1 control.
    #[wasm_bindgen(js_name = canScratch)]
    pub fn can_scratch(&self, ulen: u32, dlen: u32, action: u32) -> bool {
        let (u, d) = self.ids(ulen, dlen);
        self.engine.can(u, d, action_of(action))
    }

    /// Explains a decision.
    pub fn explain(&self, user: &str, device: &str, action: u32) -> Result<JsValue, JsValue> {
        to_js(&self.engine.explain(user, device, action_of(action)))
    }

    /// Visible device slots, ascending by id; `active_org` empty for none.
    #[wasm_bindgen(js_name = visibleSlots)]
    pub fn visible_slots(&self, user: &str, action: u32, active_org: Option<String>) -> Result<Vec<u32>, JsValue> {
        self.engine.visible_slots(user, action_of(action), active_org.as_deref()).map_err(|e| js_error(&e))
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
            out.push_str(ids.name(d));
        }
        out
    }

    /// Grows the scratch buffer to at least `bytes` and returns its address. Growing may grow
    /// the wasm memory, so the JS side re-reads the memory buffer afterwards.
    #[wasm_bindgen(js_name = scratchReserve)]
    pub fn scratch_reserve(&mut self, bytes: u32) -> u32 {
        let bytes = bytes as usize;
        if self.scratch.len() < bytes {
            self.scratch.resize(bytes, 0);
        }
        self.scratch_ptr()
    }

    /// `filterDevices` on the scratch buffer: the user (`ulen` bytes), then `count` ids, each a
    /// length byte and that many bytes (length 0: not an id; bytes past the buffer: unknown).
    /// Overwrites the start of the buffer with one byte per id, 1 when the user may do the
    /// action, and returns how many are 1. (Id `i` starts at or after byte `i`, so each mask
    /// byte lands on bytes already read.)
    #[wasm_bindgen(js_name = filterScratch)]
    pub fn filter_scratch(&mut self, ulen: u32, count: u32, action: u32) -> u32 {
        let Self { engine, scratch } = self;
        let user = scratch.get(..ulen as usize).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("");
        let allowed = engine.device_check(user, action_of(action));
        let mut pos = ulen as usize;
        let mut yes = 0;
        for i in 0..count as usize {
            let len = scratch.get(pos).map_or(0, |l| usize::from(*l));
            let start = pos.saturating_add(1);
            let id = scratch.get(start..start.saturating_add(len)).unwrap_or(&[]);
            let ok = !id.is_empty() && allowed(id);
            pos = start.saturating_add(len);
            if let Some(m) = scratch.get_mut(i) {
                *m = u8::from(ok);
            }
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
