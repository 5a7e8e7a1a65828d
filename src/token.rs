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
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use std::fmt;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::signed::{b64url_decode_unpadded, verifying_key};
use crate::snapshot::SafeInt;

/// The `iss` of every access token.
pub const TOKEN_ISSUER: &str = "fleetgate";
/// The longest validity of a token: `exp − iat` in seconds.
pub const MAX_TOKEN_LIFETIME: u64 = 300;
/// How far `iat` may lie in the future (clock skew), in seconds.
pub const MAX_CLOCK_SKEW: u64 = 60;
/// The longest token accepted, in bytes; nothing longer is decoded.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The claims, in the order the server writes them.
const CLAIMS: &[&str] = &["iss", "sub", "sid", "iat", "exp"];
/// The longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 128;

/// The claims of an access token (SPEC §4.5), exactly these and no others (`iat` and `exp`
/// at most 2^53 − 1).
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

/// The JOSE header as the server writes it.
#[derive(Debug, Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// The header fields a token may carry.
const HEADER_FIELDS: &[&str] = &["alg", "typ", "kid"];

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadToken, message)
}

fn show(s: &str) -> String {
    crate::snapshot::truncate_for_message(s)
}

/// Signs claims as a compact JWS: header `{"alg":"EdDSA","typ":"JWT","kid":"<key_id>"}`,
/// base64url without padding, Ed25519 over `header.payload`.
pub fn sign_token(claims: &TokenClaims, key_id: &str, secret: &[u8; 32]) -> String {
    let header = Header { alg: "EdDSA", typ: "JWT", kid: key_id };
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
        return Err(bad("access token is longer than 4096 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("access token is not three base64url parts separated by `.`"));
    };
    // The header: EdDSA with a key id, nothing else. Read as a map of strings (the reader the
    // wasm build has for key sets: a struct reader would cost kilobytes), from text (one
    // serde_json reader, not two).
    let header_bytes = b64url_decode_unpadded(header_b64).ok_or_else(|| bad("access token header is not base64url"))?;
    let header_text = std::str::from_utf8(&header_bytes).map_err(|_| bad("access token header is not UTF-8"))?;
    let header: BTreeMap<String, String> =
        serde_json::from_str(header_text).map_err(|_| bad("access token header is not a JSON object of strings"))?;
    if header.keys().any(|k| !HEADER_FIELDS.contains(&k.as_str())) {
        return Err(bad("access token header has a field other than `alg`, `typ` and `kid`"));
    }
    let alg = header.get("alg").map_or("", String::as_str);
    if alg != "EdDSA" {
        return Err(bad(format!("access token `alg` is `{}` (expected `EdDSA`)", show(alg))));
    }
    if header.get("typ").is_some_and(|t| t != "JWT") {
        return Err(bad("access token `typ` must be `JWT`"));
    }
    let kid = header.get("kid").ok_or_else(|| bad("access token header has no `kid`"))?;
    // The signature, over the ASCII of `header.payload`.
    let key = verifying_key(keys, kid)?;
    let sig_bytes = b64url_decode_unpadded(sig_b64).ok_or_else(|| bad("access token signature is not base64url"))?;
    // A signature that is not 64 bytes cannot verify either: one error for both.
    let signing_input = token.get(..header_b64.len() + 1 + payload_b64.len()).unwrap_or_default();
    let verified = <[u8; 64]>::try_from(sig_bytes)
        .is_ok_and(|sig| key.verify(signing_input.as_bytes(), &Signature::from_bytes(&sig)).is_ok());
    if !verified {
        let why = format!("access token signature of key `{}` does not verify", show(kid));
        return Err(Error::new(ErrorCode::BadSignature, why));
    }
    // Only now the claims.
    let payload = b64url_decode_unpadded(payload_b64).ok_or_else(|| bad("access token claims are not base64url"))?;
    let payload = std::str::from_utf8(&payload).map_err(|_| bad("access token claims are not UTF-8"))?;
    let claims = parse_claims(payload)?;
    check_claims(&claims, now)?;
    Ok(claims)
}

/// Reads the claims object strictly: exactly the five claims, each once and of its type.
fn parse_claims(text: &str) -> Result<TokenClaims> {
    let mut de = serde_json::Deserializer::from_str(text);
    let claims = serde::Deserializer::deserialize_map(&mut de, ClaimsVisitor)
        .and_then(|c| de.end().map(|()| c))
        .map_err(|e| bad(format!("access token claims: {e}")))?;
    Ok(claims)
}

/// A map-only reader for the claims: a derived struct reader also reads arrays, and in the
/// wasm build that costs kilobytes.
struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = TokenClaims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of the claims `iss`, `sub`, `sid`, `iat` and `exp`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<TokenClaims, A::Error> {
        let (mut iss, mut sub, mut sid, mut iat, mut exp) = (None, None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let seen = match key.as_str() {
                "iss" => iss.replace(map.next_value::<String>()?).is_some(),
                "sub" => sub.replace(map.next_value::<String>()?).is_some(),
                "sid" => sid.replace(map.next_value::<String>()?).is_some(),
                "iat" => iat.replace(map.next_value::<SafeInt>()?.0).is_some(),
                "exp" => exp.replace(map.next_value::<SafeInt>()?.0).is_some(),
                _ => return Err(A::Error::unknown_field(&key, CLAIMS)),
            };
            if seen {
                return Err(A::Error::custom("duplicate claim"));
            }
        }
        let missing = A::Error::missing_field;
        Ok(TokenClaims {
            iss: iss.ok_or_else(|| missing("iss"))?,
            sub: sub.ok_or_else(|| missing("sub"))?,
            sid: sid.ok_or_else(|| missing("sid"))?,
            iat: iat.ok_or_else(|| missing("iat"))?,
            exp: exp.ok_or_else(|| missing("exp"))?,
        })
    }
}

fn check_claims(c: &TokenClaims, now: u64) -> Result<()> {
    if c.iss != TOKEN_ISSUER {
        return Err(bad("access token `iss` must be `fleetgate`"));
    }
    if let Err(why) = crate::snapshot::check_id(&c.sub) {
        return Err(bad(format!("access token `sub`: {why}")));
    }
    if c.sid.is_empty() || c.sid.len() > MAX_SESSION_LEN || !c.sid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("access token `sid` must be 1–128 printable ASCII bytes"));
    }
    match c.exp.checked_sub(c.iat) {
        None => return Err(bad("access token `exp` is before `iat`")),
        Some(life) if life > MAX_TOKEN_LIFETIME => {
            return Err(bad("access token lives longer than 300 s (`exp` - `iat`)"))
        }
        Some(_) => {}
    }
    if c.iat > now.saturating_add(MAX_CLOCK_SKEW) {
        return Err(bad("access token `iat` is more than 60 s after now"));
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
