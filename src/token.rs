//! Access tokens (SPEC §4.5): compact JWTs signed with EdDSA over Ed25519 (RFC 7519, RFC 8037)
//! by the keys of the signed envelopes, so an edge can tell who calls without asking the server.
//!
//! Verification is strict: the header is exactly `alg` (`EdDSA`), `typ` (`JWT`, optional) and
//! `kid`; the claims are exactly `iss`, `sub`, `sid`, `iat` and `exp` (extra claims are
//! `BAD_TOKEN`: the server issues no others, and a verifier that ignored some would accept
//! tokens it does not understand). The header is read first, then the signature is checked,
//! and only then are the claims interpreted.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::signed::verifying_key;

/// The `iss` of every access token.
pub const TOKEN_ISSUER: &str = "fleetgate";
/// The longest validity of a token: `exp − iat` in seconds.
pub const MAX_TOKEN_LIFETIME: u64 = 300;
/// How far `iat` may lie in the future (clock skew), in seconds.
pub const MAX_CLOCK_SKEW: u64 = 60;
/// The longest token accepted, in bytes; nothing longer is decoded.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 128;
/// The largest timestamp (2^53 − 1, as in snapshots).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The claims of an access token (SPEC §4.5), exactly these and no others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Always `fleetgate`.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The opaque id of the session the token came from (1–128 printable ASCII bytes).
    pub sid: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds (`exp − iat ≤ 300`).
    pub exp: u64,
}

/// The JOSE header, exactly as the server writes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadToken, message)
}

fn show(s: &str) -> String {
    crate::snapshot::truncate_for_message(s)
}

/// Signs claims as a compact JWS: header `{"alg":"EdDSA","typ":"JWT","kid":"<key_id>"}`,
/// base64url without padding, Ed25519 over `header.payload`.
pub fn sign_token(claims: &TokenClaims, key_id: &str, secret: &[u8; 32]) -> String {
    let header = Header { alg: "EdDSA".to_owned(), typ: Some("JWT".to_owned()), kid: Some(key_id.to_owned()) };
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let sig = SigningKey::from_bytes(secret).sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Verifies an access token at `now` (unix seconds) with a key set (`{keyId: base64url public
/// key}`) and returns its claims. `BAD_TOKEN`: not a well-formed 3-part compact JWT (or longer
/// than 4 KiB), bad base64url, a header or claims of the wrong shape, `alg` other than `EdDSA`,
/// no `kid`, `iss` not `fleetgate`, `exp − iat > 300`, `iat > now + 60`. `UNKNOWN_KEY`: a `kid`
/// not in `keys`. `BAD_SIGNATURE`: the signature does not verify. `EXPIRED`: `now > exp`.
pub fn verify_token(token: &str, keys: &BTreeMap<String, String>, now: u64) -> Result<TokenClaims> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad(format!("access token is longer than {MAX_TOKEN_LEN} bytes")));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("access token is not three base64url parts separated by `.`"));
    };
    // The header: EdDSA with a key id, nothing else.
    let header_bytes = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| bad("access token header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|e| bad(format!("access token header: {e}")))?;
    if header.alg != "EdDSA" {
        return Err(bad(format!("access token `alg` is `{}` (expected `EdDSA`)", show(&header.alg))));
    }
    if let Some(typ) = header.typ.as_deref().filter(|t| *t != "JWT") {
        return Err(bad(format!("access token `typ` is `{}` (expected `JWT`)", show(typ))));
    }
    let kid = header.kid.ok_or_else(|| bad("access token header has no `kid`"))?;
    // The signature, over the ASCII of `header.payload`.
    let key = verifying_key(keys, &kid)?;
    let sig_bytes = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| bad("access token signature is not base64url"))?;
    let sig: [u8; 64] = sig_bytes.try_into().map_err(|_| {
        Error::new(ErrorCode::BadSignature, format!("access token signature of key `{}` is not 64 bytes", show(&kid)))
    })?;
    let signing_input = token.get(..header_b64.len() + 1 + payload_b64.len()).unwrap_or_default();
    key.verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig)).map_err(|_| {
        Error::new(ErrorCode::BadSignature, format!("access token signature of key `{}` does not verify", show(&kid)))
    })?;
    // Only now the claims.
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| bad("access token claims are not base64url"))?;
    let claims: TokenClaims = serde_json::from_slice(&payload).map_err(|e| bad(format!("access token claims: {e}")))?;
    check_claims(&claims, now)?;
    Ok(claims)
}

fn check_claims(c: &TokenClaims, now: u64) -> Result<()> {
    if c.iss != TOKEN_ISSUER {
        return Err(bad(format!("access token `iss` is `{}` (expected `{TOKEN_ISSUER}`)", show(&c.iss))));
    }
    if let Err(why) = crate::snapshot::check_id(&c.sub) {
        return Err(bad(format!("access token `sub`: {why}")));
    }
    if c.sid.is_empty() || c.sid.len() > MAX_SESSION_LEN || !c.sid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!("access token `sid` must be 1–{MAX_SESSION_LEN} printable ASCII bytes")));
    }
    if c.iat > MAX_SAFE_INTEGER || c.exp > MAX_SAFE_INTEGER {
        return Err(bad("access token `iat` and `exp` must be at most 2^53 - 1"));
    }
    match c.exp.checked_sub(c.iat) {
        None => return Err(bad(format!("access token `exp` ({}) is before `iat` ({})", c.exp, c.iat))),
        Some(life) if life > MAX_TOKEN_LIFETIME => {
            return Err(bad(format!(
                "access token lives {life} s (`exp` - `iat` must be at most {MAX_TOKEN_LIFETIME})"
            )))
        }
        Some(_) => {}
    }
    if c.iat > now.saturating_add(MAX_CLOCK_SKEW) {
        return Err(bad(format!("access token `iat` ({}) is more than {MAX_CLOCK_SKEW} s after now ({now})", c.iat)));
    }
    if now > c.exp {
        return Err(Error::new(ErrorCode::Expired, format!("access token expired at {}, now is {now}", c.exp)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::signed::Envelope;

    const SECRET: [u8; 32] = [7u8; 32];

    fn keys() -> BTreeMap<String, String> {
        BTreeMap::from([("k1".to_owned(), Envelope::public_key(&SECRET))])
    }

    fn claims(iat: u64, exp: u64) -> TokenClaims {
        TokenClaims { iss: "fleetgate".into(), sub: "alice".into(), sid: "s-1".into(), iat, exp }
    }

    fn code(r: Result<TokenClaims>) -> Option<&'static str> {
        r.err().map(|e| e.code())
    }

    /// A token with a raw header and claims JSON, signed with the test key.
    fn raw(header: &str, claims: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let sig = SigningKey::from_bytes(&SECRET).sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[test]
    fn header_is_exact_and_round_trip() {
        let t = sign_token(&claims(1000, 1300), "k1", &SECRET);
        let header = URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap();
        assert_eq!(header, br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
        assert_eq!(verify_token(&t, &keys(), 1000).unwrap(), claims(1000, 1300));
        assert_eq!(verify_token(&t, &keys(), 1300).unwrap(), claims(1000, 1300), "valid at exp");
        assert_eq!(verify_token(&t, &keys(), 940).unwrap(), claims(1000, 1300), "iat may be 60 s ahead");
        assert_eq!(code(verify_token(&t, &keys(), 939)), Some("BAD_TOKEN"));
        assert_eq!(code(verify_token(&t, &keys(), 1301)), Some("EXPIRED"));
        assert_eq!(code(verify_token(&t, &BTreeMap::new(), 1000)), Some("UNKNOWN_KEY"));
        let other = BTreeMap::from([("k1".to_owned(), Envelope::public_key(&[8u8; 32]))]);
        assert_eq!(code(verify_token(&t, &other, 1000)), Some("BAD_SIGNATURE"));
    }

    #[test]
    fn malformed_tokens() {
        let ks = keys();
        let c = r#"{"iss":"fleetgate","sub":"alice","sid":"s","iat":1000,"exp":1100}"#;
        let good_header = r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#;
        assert!(verify_token(&raw(good_header, c), &ks, 1000).is_ok());
        assert!(verify_token(&raw(r#"{"alg":"EdDSA","kid":"k1"}"#, c), &ks, 1000).is_ok(), "typ is optional");
        for (header, claims, want) in [
            (r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, c, "BAD_TOKEN"),
            (r#"{"alg":"none","typ":"JWT","kid":"k1"}"#, c, "BAD_TOKEN"),
            (r#"{"alg":"EdDSA","typ":"JWT"}"#, c, "BAD_TOKEN"),
            (r#"{"alg":"EdDSA","typ":"JOSE","kid":"k1"}"#, c, "BAD_TOKEN"),
            (r#"{"alg":"EdDSA","kid":"k1","crit":["x"]}"#, c, "BAD_TOKEN"),
            (r#"{"alg":"EdDSA","kid":"k9"}"#, c, "UNKNOWN_KEY"),
            ("[]", c, "BAD_TOKEN"),
            ("not json", c, "BAD_TOKEN"),
            (good_header, r#"{"iss":"other","sub":"alice","sid":"s","iat":1000,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","sid":"s","iat":1000,"exp":1301}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","sid":"s","iat":1000,"exp":999}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","sid":"s","iat":1000,"exp":1100,"x":1}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","iat":1000,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":7,"sid":"s","iat":1000,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"bad id","sid":"s","iat":1000,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","sid":"","iat":1000,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","sid":"s","iat":-1,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, r#"{"iss":"fleetgate","sub":"alice","sid":"s","iat":1.5,"exp":1100}"#, "BAD_TOKEN"),
            (good_header, "null", "BAD_TOKEN"),
        ] {
            assert_eq!(code(verify_token(&raw(header, claims), &ks, 1000)), Some(want), "{header} {claims}");
        }
        let good = raw(good_header, c);
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for t in ["", ".", "..", "a.b", "a.b.c.d", &format!("{h}.{p}"), &format!("{h}.{p}.{s}.")] {
            assert_eq!(code(verify_token(t, &ks, 1000)), Some("BAD_TOKEN"), "{t}");
        }
        assert_eq!(code(verify_token(&format!("{h}.{p}.{s}="), &ks, 1000)), Some("BAD_TOKEN"), "padding");
        assert_eq!(code(verify_token(&format!("{h}.{p}."), &ks, 1000)), Some("BAD_SIGNATURE"), "empty signature");
        assert_eq!(code(verify_token(&format!("{h}.{p}x.{s}"), &ks, 1000)), Some("BAD_SIGNATURE"), "tampered claims");
        let long = format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(code(verify_token(&long, &ks, 1000)), Some("BAD_TOKEN"));
    }

    // proptest is a native-only dev-dependency.
    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,300}", now in 0u64..u64::MAX) {
            let _ = verify_token(&s, &keys(), now);
        }

        #[test]
        fn arbitrary_dotted_base64_never_panics(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,120}", c in "[A-Za-z0-9_-]{0,90}") {
            let _ = verify_token(&format!("{a}.{b}.{c}"), &keys(), 1000);
            let _ = verify_token(&format!("eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.{b}.{c}"), &keys(), 1000);
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        // Each case signs and verifies: fewer cases keep the debug test run short.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        #[test]
        fn arbitrary_claims_never_panic(sub in "\\PC{0,20}", sid in "\\PC{0,20}", iat: u64, exp: u64, now: u64) {
            let t = sign_token(&TokenClaims { iss: "fleetgate".into(), sub, sid, iat, exp }, "k1", &SECRET);
            let _ = verify_token(&t, &keys(), now);
        }
    }
}
