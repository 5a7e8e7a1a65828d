//! The generator of `tests/vectors/signed.json` (SPEC §4.4, §4.5): signed snapshots, signed
//! deltas and access tokens, made deterministically with the documented test key (seed: 32
//! bytes of 0x07 — not a secret). The committed JSON is the truth; `committed_file_is_current`
//! only checks that the generator still writes it. Regenerate with
//! `cargo test -p fleetgate --test signed_vectors -- --ignored write_signed_vectors`.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use fleetgate::signed::{b64url, Envelope};
use fleetgate::{sign_token, TokenClaims};
use serde::Serialize;
use serde_json::{json, Value};

/// The test key's seed: 32 bytes of 0x07. Public knowledge; never use it for anything real.
const SEED: [u8; 32] = [7u8; 32];
/// A second test key (32 bytes of 0x08), published as `k2`.
const SEED2: [u8; 32] = [8u8; 32];
/// The vectors' clock: 2026-01-01T00:00:00Z.
const T: u64 = 1_767_225_600;

#[derive(Serialize)]
struct Case {
    name: &'static str,
    call: &'static str,
    args: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(rename = "errorMentions", skip_serializing_if = "Option::is_none")]
    error_mentions: Option<&'static str>,
}

fn ok(name: &'static str, call: &'static str, args: Vec<Value>, expect: Value) -> Case {
    Case { name, call, args, expect: Some(expect), error: None, error_mentions: None }
}

fn fails(name: &'static str, call: &'static str, args: Vec<Value>, error: &'static str) -> Case {
    Case { name, call, args, expect: None, error: Some(error), error_mentions: None }
}

fn mentions(mut case: Case, what: &'static str) -> Case {
    case.error_mentions = Some(what);
    case
}

fn keys() -> Value {
    json!({"k1": Envelope::public_key(&SEED), "k2": Envelope::public_key(&SEED2)})
}

fn env(payload: &Value) -> Value {
    serde_json::to_value(Envelope::sign(payload.to_string().as_bytes(), "k1", &SEED)).unwrap()
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// Flips one bit in the middle of a base64url field's bytes.
fn flip(text: &str) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(text).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    b64url(&bytes)
}

fn delta(from: u64, to: u64, ops: Value, expiry: Option<(u64, u64)>) -> Value {
    let mut d = json!({"format": "fleetgate/delta@1", "from": from, "to": to, "ops": ops});
    if let Some((iat, exp)) = expiry {
        d["issuedAt"] = json!(iat);
        d["expiresAt"] = json!(exp);
    }
    d
}

fn state(revision: u64, expires_at: u64) -> Value {
    json!({"revision": revision, "expiresAt": expires_at})
}

fn now(n: u64) -> Value {
    json!({"now": n})
}

fn claims(iat: u64, exp: u64) -> TokenClaims {
    TokenClaims { iss: "fleetgate".into(), sub: "alice".into(), sid: "sess-1".into(), iat, exp }
}

/// A token with a raw header and claims JSON, signed by `secret`.
fn raw_token(header: &Value, claims: &Value, secret: &[u8; 32]) -> String {
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = SigningKey::from_bytes(secret).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn world() -> Value {
    json!({
        "format": "fleetgate/snapshot@1", "revision": 5, "viewer": null, "issuedAt": T, "expiresAt": T + 300,
        "orgs": [{"id": "acme", "name": "ACME"}, {"id": "east", "name": "East", "parent": "acme"}],
        "users": [
            {"id": "alice", "email": "alice@acme.test", "name": "Alice", "status": "active"},
            {"id": "bob", "email": "bob@acme.test", "name": "Bob", "status": "active"}
        ],
        "memberships": [{"user": "alice", "org": "acme", "role": "Admin"}, {"user": "bob", "org": "east", "role": "Staff"}],
        "devices": [{"id": "t1", "name": "Thermo", "org": "east", "owner": null}, {"id": "t2", "name": "Lock", "org": "acme"}]
    })
}

fn snapshot_cases(out: &mut Vec<Case>) {
    let k = keys();
    let good = env(&world());
    let only_k2 = json!({"k2": Envelope::public_key(&SEED2)});
    let tampered =
        with(good.clone(), "payload", json!(b64url(with(world(), "revision", json!(50)).to_string().as_bytes())));
    let bad_sig = with(good.clone(), "signature", json!(flip(good["signature"].as_str().unwrap())));
    let payload_text = good["payload"].as_str().unwrap().to_owned();
    let over_text = with(
        good.clone(),
        "signature",
        json!(b64url(&SigningKey::from_bytes(&SEED).sign(payload_text.as_bytes()).to_bytes())),
    );
    let opts = json!({"now": T + 10, "minRevision": 5});
    out.extend([
        ok("signed snapshot: good", "fromSigned", vec![good.clone(), k.clone(), opts.clone()], state(5, T + 300)),
        ok("the signed world answers", "canView", vec![json!("bob"), json!("t1")], json!(true)),
        fails(
            "signed snapshot: tampered payload",
            "fromSigned",
            vec![tampered, k.clone(), opts.clone()],
            "BAD_SIGNATURE",
        ),
        fails(
            "signed snapshot: tampered signature",
            "fromSigned",
            vec![bad_sig, k.clone(), opts.clone()],
            "BAD_SIGNATURE",
        ),
        fails(
            "signed snapshot: a signature over the base64url text is not one over the payload bytes",
            "fromSigned",
            vec![over_text, k.clone(), opts.clone()],
            "BAD_SIGNATURE",
        ),
        mentions(
            fails(
                "signed snapshot: unknown key",
                "fromSigned",
                vec![good.clone(), only_k2, opts.clone()],
                "UNKNOWN_KEY",
            ),
            "k1",
        ),
        mentions(
            fails(
                "signed snapshot: a malformed public key",
                "fromSigned",
                vec![good.clone(), json!({"k1": "not-a-key"}), opts],
                "UNKNOWN_KEY",
            ),
            "k1",
        ),
        fails(
            "signed snapshot: rollback below minRevision",
            "fromSigned",
            vec![good.clone(), k.clone(), json!({"now": T + 10, "minRevision": 6})],
            "ROLLBACK",
        ),
        ok(
            "signed snapshot: valid at expiresAt",
            "fromSigned",
            vec![good.clone(), k.clone(), json!({"now": T + 300})],
            state(5, T + 300),
        ),
        fails("signed snapshot: expired", "fromSigned", vec![good, k, now(T + 301)], "EXPIRED"),
        ok("expiresAt after the failures", "expiresAt", vec![], json!(T + 300)),
    ]);
}

fn delta_cases(out: &mut Vec<Case>) {
    let k = keys();
    let only_k2 = json!({"k2": Envelope::public_key(&SEED2)});
    let drop_bob = json!([{"op": "removeMembership", "user": "bob", "org": "east"}]);
    let add_bob = json!([{"op": "putMembership", "membership": {"user": "bob", "org": "east", "role": "Staff"}}]);
    let rename =
        json!([{"op": "putDevice", "device": {"id": "t2", "name": "Front lock", "org": "acme", "owner": null}}]);
    let first = env(&delta(5, 6, drop_bob.clone(), Some((T + 20, T + 320))));
    let next = env(&delta(6, 7, add_bob.clone(), Some((T + 30, T + 330))));
    let tampered = with(next.clone(), "payload", json!(b64url(delta(6, 7, json!([]), None).to_string().as_bytes())));
    let bad_sig = with(next.clone(), "signature", json!(flip(next["signature"].as_str().unwrap())));
    let breaks = json!([{"op": "removeOrg", "id": "east"}]);
    out.extend([
        ok("signed delta: good", "applySignedDelta", vec![first.clone(), k.clone(), now(T + 20)], state(6, T + 320)),
        ok("the delta's ops took effect", "canView", vec![json!("bob"), json!("t1")], json!(false)),
        fails(
            "signed delta: tampered payload",
            "applySignedDelta",
            vec![tampered, k.clone(), now(T + 30)],
            "BAD_SIGNATURE",
        ),
        fails(
            "signed delta: tampered signature",
            "applySignedDelta",
            vec![bad_sig, k.clone(), now(T + 30)],
            "BAD_SIGNATURE",
        ),
        mentions(
            fails("signed delta: unknown key", "applySignedDelta", vec![next, only_k2, now(T + 30)], "UNKNOWN_KEY"),
            "k1",
        ),
        fails(
            "signed delta: rollback (to below the revision)",
            "applySignedDelta",
            vec![env(&delta(4, 5, rename.clone(), Some((T, T + 300)))), k.clone(), now(T + 30)],
            "ROLLBACK",
        ),
        fails(
            "signed delta: the last delta again does not follow the revision",
            "applySignedDelta",
            vec![first, k.clone(), now(T + 30)],
            "REVISION_MISMATCH",
        ),
        fails(
            "signed delta: expired",
            "applySignedDelta",
            vec![env(&delta(6, 7, add_bob.clone(), Some((T, T + 100)))), k.clone(), now(T + 200)],
            "EXPIRED",
        ),
        mentions(
            fails(
                "signed delta: wrong from",
                "applySignedDelta",
                vec![env(&delta(7, 8, rename.clone(), Some((T + 30, T + 330)))), k.clone(), now(T + 30)],
                "REVISION_MISMATCH",
            ),
            "7",
        ),
        fails(
            "signed delta: breaks an invariant, nothing changes",
            "applySignedDelta",
            vec![env(&delta(6, 7, breaks, Some((T + 30, T + 330)))), k.clone(), now(T + 30)],
            "UNKNOWN_REFERENCE",
        ),
        fails(
            "signed delta: a signed snapshot is not a delta",
            "applySignedDelta",
            vec![env(&world()), k.clone(), now(T + 30)],
            "INVALID_DELTA",
        ),
        fails(
            "signed delta: a signed payload that is not JSON",
            "applySignedDelta",
            vec![serde_json::to_value(Envelope::sign(b"{oops", "k1", &SEED)).unwrap(), k.clone(), now(T + 30)],
            "INVALID_JSON",
        ),
        ok("state after the failures", "expiresAt", vec![], json!(T + 320)),
        ok(
            "signed renewal: extends expiresAt, revision unchanged",
            "applySignedDelta",
            vec![env(&delta(6, 6, json!([]), Some((T + 100, T + 400)))), k.clone(), now(T + 100)],
            state(6, T + 400),
        ),
        fails(
            "signed renewal of an older revision",
            "applySignedDelta",
            vec![env(&delta(5, 5, json!([]), Some((T + 100, T + 500)))), k.clone(), now(T + 100)],
            "ROLLBACK",
        ),
        fails(
            "signed renewal of a later revision",
            "applySignedDelta",
            vec![env(&delta(7, 7, json!([]), Some((T + 100, T + 500)))), k.clone(), now(T + 100)],
            "REVISION_MISMATCH",
        ),
        fails(
            "signed renewal with ops",
            "applySignedDelta",
            vec![env(&delta(6, 6, rename.clone(), Some((T + 100, T + 500)))), k.clone(), now(T + 100)],
            "INVALID_DELTA",
        ),
        fails(
            "signed renewal: expired",
            "applySignedDelta",
            vec![env(&delta(6, 6, json!([]), Some((T, T + 50)))), k.clone(), now(T + 100)],
            "EXPIRED",
        ),
        ok(
            "signed delta after the renewal",
            "applySignedDelta",
            vec![env(&delta(6, 7, add_bob, Some((T + 110, T + 410)))), k.clone(), now(T + 110)],
            state(7, T + 410),
        ),
        ok("the delta after the renewal took effect", "canView", vec![json!("bob"), json!("t1")], json!(true)),
        ok(
            "signed delta without expiresAt keeps the previous expiry",
            "applySignedDelta",
            vec![env(&delta(7, 8, rename, None)), k, now(T + 120)],
            state(8, T + 410),
        ),
    ]);
}

fn token_cases(out: &mut Vec<Case>) {
    let k = keys();
    let good = sign_token(&claims(T, T + 300), "k1", &SEED);
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let who = json!({"user": "alice", "session": "sess-1", "expiresAt": T + 300});
    let good_claims = serde_json::to_value(claims(T, T + 300)).unwrap();
    let header = |alg: &str| json!({"alg": alg, "typ": "JWT", "kid": "k1"});
    let other_claims = URL_SAFE_NO_PAD.encode(with(good_claims.clone(), "sub", json!("bob")).to_string());
    let hs256 = format!(
        "{}.{p}.{}",
        URL_SAFE_NO_PAD.encode(header("HS256").to_string()),
        URL_SAFE_NO_PAD.encode([0x5a_u8; 32])
    );
    let none = format!("{}.{p}.", URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()));
    let no_kid = raw_token(&json!({"alg": "EdDSA", "typ": "JWT"}), &good_claims, &SEED);
    let signed = |c: Value| json!(raw_token(&header("EdDSA"), &c, &SEED));
    let tok = |name, t: Value, at: u64, error| fails(name, "verifyToken", vec![t, k.clone(), now(at)], error);
    out.extend([
        ok("token: good", "verifyToken", vec![json!(good), k.clone(), now(T + 10)], who.clone()),
        ok("token: valid at exp", "verifyToken", vec![json!(good), k.clone(), now(T + 300)], who.clone()),
        ok("token: iat may be 60 s ahead of now", "verifyToken", vec![json!(good), k.clone(), now(T - 60)], who),
        mentions(tok("token: alg HS256", json!(hs256), T + 10, "BAD_TOKEN"), "HS256"),
        mentions(tok("token: alg none with an empty signature", json!(none), T + 10, "BAD_TOKEN"), "none"),
        tok("token: tampered claims", json!(format!("{h}.{other_claims}.{s}")), T + 10, "BAD_SIGNATURE"),
        tok("token: tampered signature", json!(format!("{h}.{p}.{}", flip(s))), T + 10, "BAD_SIGNATURE"),
        tok("token: empty signature", json!(format!("{h}.{p}.")), T + 10, "BAD_SIGNATURE"),
        mentions(
            tok("token: unknown kid", json!(sign_token(&claims(T, T + 300), "k9", &SEED)), T + 10, "UNKNOWN_KEY"),
            "k9",
        ),
        tok(
            "token: signed by another key",
            json!(sign_token(&claims(T, T + 300), "k1", &SEED2)),
            T + 10,
            "BAD_SIGNATURE",
        ),
        mentions(tok("token: no kid", json!(no_kid), T + 10, "BAD_TOKEN"), "kid"),
        tok("token: expired", json!(good), T + 301, "EXPIRED"),
        mentions(tok("token: iat too far in the future", json!(good), T - 61, "BAD_TOKEN"), "iat"),
        tok(
            "token: issued in the future",
            signed(serde_json::to_value(claims(T + 1000, T + 1100)).unwrap()),
            T,
            "BAD_TOKEN",
        ),
        tok("token: exp - iat > 300", signed(serde_json::to_value(claims(T, T + 301)).unwrap()), T + 10, "BAD_TOKEN"),
        tok("token: exp before iat", signed(serde_json::to_value(claims(T, T - 1)).unwrap()), T - 10, "BAD_TOKEN"),
        mentions(
            tok("token: wrong issuer", signed(with(good_claims.clone(), "iss", json!("evil"))), T + 10, "BAD_TOKEN"),
            "iss",
        ),
        tok(
            "token: claims of the wrong shape (sub a number)",
            signed(with(good_claims.clone(), "sub", json!(7))),
            T + 10,
            "BAD_TOKEN",
        ),
        tok(
            "token: claims of the wrong shape (no sid)",
            signed(json!({"iss": "fleetgate", "sub": "alice", "iat": T, "exp": T + 300})),
            T + 10,
            "BAD_TOKEN",
        ),
        tok(
            "token: claims of the wrong shape (an extra claim)",
            signed(with(good_claims.clone(), "admin", json!(true))),
            T + 10,
            "BAD_TOKEN",
        ),
        tok("token: claims of the wrong shape (an array)", signed(json!([1, 2])), T + 10, "BAD_TOKEN"),
        tok("token: not three parts (two)", json!(format!("{h}.{p}")), T + 10, "BAD_TOKEN"),
        tok("token: not three parts (four)", json!(format!("{good}.{s}")), T + 10, "BAD_TOKEN"),
        tok("token: empty", json!(""), T + 10, "BAD_TOKEN"),
        tok("token: header not base64url", json!(format!("!!.{p}.{s}")), T + 10, "BAD_TOKEN"),
        tok("token: header not JSON", json!(format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode("alg"))), T + 10, "BAD_TOKEN"),
        tok("token: longer than 4 KiB", json!(format!("{h}.{}.{s}", "A".repeat(4096))), T + 10, "BAD_TOKEN"),
    ]);
}

fn generate() -> String {
    let mut cases = Vec::new();
    snapshot_cases(&mut cases);
    delta_cases(&mut cases);
    token_cases(&mut cases);
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct File {
        description: &'static str,
        test_key: Value,
        snapshot: Value,
        cases: Vec<Case>,
    }
    let file = File {
        description: "Signed snapshots and deltas (SPEC §4.4) and access tokens (SPEC §4.5), made by tests/signed_vectors.rs with the test key below. Cases run in order on the engine the last successful fromSigned loaded.",
        test_key: json!({
            "seed": "0707070707070707070707070707070707070707070707070707070707070707",
            "note": "an Ed25519 seed of 32 bytes of 0x07: a published test key, never use it for anything real; k2 is 32 bytes of 0x08",
            "keys": keys()
        }),
        snapshot: Value::Null,
        cases,
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap();
    text.push('\n');
    text
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/signed.json")
}

#[test]
#[ignore = "writes tests/vectors/signed.json"]
fn write_signed_vectors() {
    std::fs::write(path(), generate()).unwrap();
}

#[test]
fn committed_file_is_current() {
    let committed = std::fs::read_to_string(path()).unwrap();
    assert!(
        committed == generate(),
        "tests/vectors/signed.json differs from its generator: regenerate it (see the file's doc)"
    );
}
