//! Signed envelopes (SPEC §4.4) for the edge: Ed25519 over the JSON bytes of a snapshot or a
//! delta, with key ids, rollback protection and expiry.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::delta::Delta;
use crate::engine::Engine;
use crate::error::{Error, ErrorCode, Result};

/// The `format` of a signed envelope.
pub const SIGNED_FORMAT: &str = "fleetgate/signed@1";

/// base64url, written without padding, read with or without it.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// base64url without padding, read strictly (JWS compact serialization, SPEC §4.5).
const B64_UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The one base64 decoder call of the crate: not inlined, so the wasm build carries it once.
#[inline(never)]
fn decode_with(engine: &GeneralPurpose, text: &str) -> Option<Vec<u8>> {
    engine.decode(text).ok()
}

/// Decodes base64url, with or without padding.
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    decode_with(&B64, text)
}

/// Decodes base64url that must have no padding.
pub(crate) fn b64url_decode_unpadded(text: &str) -> Option<Vec<u8>> {
    decode_with(&B64_UNPADDED, text)
}

/// The Ed25519 public key named `key_id` in a key set (`UNKNOWN_KEY` when absent or malformed).
pub(crate) fn verifying_key(keys: &BTreeMap<String, String>, key_id: &str) -> Result<VerifyingKey> {
    let shown = crate::snapshot::truncate_for_message(key_id);
    let key_text =
        keys.get(key_id).ok_or_else(|| Error::new(ErrorCode::UnknownKey, format!("unknown key id `{shown}`")))?;
    let key_bytes: [u8; 32] = b64url_decode(key_text)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::new(ErrorCode::UnknownKey, format!("key `{shown}` is not a 32-byte base64url key")))?;
    VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| Error::new(ErrorCode::UnknownKey, format!("key `{shown}` is not an Ed25519 public key")))
}

/// A signed envelope (SPEC §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "a signed envelope object")]
pub struct Envelope {
    /// Always `fleetgate/signed@1`.
    pub format: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// base64url of the payload: the JSON bytes of a snapshot or a delta.
    pub payload: String,
    /// base64url of the Ed25519 signature over exactly the decoded payload bytes.
    pub signature: String,
}

/// Options of `from_signed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The current time in unix seconds (expiry is checked against it).
    pub now: u64,
    /// The last revision the caller accepted: anything older is a rollback.
    pub min_revision: Option<u64>,
}

impl Envelope {
    /// Signs payload bytes (snapshot or delta JSON) with a 32-byte Ed25519 secret key.
    pub fn sign(payload_json: &[u8], key_id: &str, secret: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(secret);
        let sig = key.sign(payload_json);
        Self {
            format: SIGNED_FORMAT.to_owned(),
            key_id: key_id.to_owned(),
            payload: b64url(payload_json),
            signature: b64url(&sig.to_bytes()),
        }
    }

    /// The base64url public key of a 32-byte secret key.
    pub fn public_key(secret: &[u8; 32]) -> String {
        b64url(SigningKey::from_bytes(secret).verifying_key().as_bytes())
    }

    /// The envelope as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses envelope JSON text (a malformed envelope is `INVALID_SNAPSHOT`).
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_as(text, ErrorCode::InvalidSnapshot)
    }

    /// Parses envelope JSON text; `schema` is the code of a well-formed JSON of the wrong shape.
    fn parse_as(text: &str, schema: ErrorCode) -> Result<Self> {
        let env: Envelope =
            serde_json::from_str(text).map_err(|e| Error::from_json(text, &e, schema, "signed envelope"))?;
        if env.format != SIGNED_FORMAT {
            return Err(Error::new(schema, format!("unknown envelope format (expected `{SIGNED_FORMAT}`)")));
        }
        Ok(env)
    }

    /// Verifies the signature with the named key and returns the payload bytes. The signature
    /// covers exactly the decoded payload bytes (SPEC §4.4 v2): a signature over the base64url
    /// text is not accepted.
    pub fn verify(&self, keys: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        let key = verifying_key(keys, &self.key_id)?;
        let shown = crate::snapshot::truncate_for_message(&self.key_id);
        let bad = |why: &str| Error::new(ErrorCode::BadSignature, format!("signature of key `{shown}` {why}"));
        let sig_bytes: [u8; 64] = b64url_decode(&self.signature)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("is not 64 base64url bytes"))?;
        let sig = Signature::from_bytes(&sig_bytes);
        let payload = b64url_decode(&self.payload).ok_or_else(|| bad("covers a payload that is not base64url"))?;
        key.verify(&payload, &sig).map_err(|_| bad("does not verify"))?;
        Ok(payload)
    }

    /// Verifies and returns the payload as UTF-8 text.
    fn verified_text(&self, keys: &BTreeMap<String, String>) -> Result<String> {
        String::from_utf8(self.verify(keys)?)
            .map_err(|_| Error::new(ErrorCode::InvalidJson, "signed payload is not UTF-8"))
    }
}

fn expired(what: &str, exp: u64, now: u64) -> Error {
    Error::new(ErrorCode::Expired, format!("{what} expired at {exp}, now is {now}"))
}

impl Engine {
    /// Loads a signed snapshot: verifies it, then rejects rollback and expiry (SPEC §4.4). The
    /// engine's [`Engine::signed_expires_at`] is the snapshot's `expiresAt`.
    pub fn from_signed(envelope: &str, keys: &BTreeMap<String, String>, opts: VerifyOptions) -> Result<Self> {
        let env = Envelope::parse(envelope)?;
        let text = env.verified_text(keys)?;
        let mut engine = Engine::from_json(&text)?;
        if let Some(min) = opts.min_revision {
            if engine.revision() < min {
                return Err(Error::new(
                    ErrorCode::Rollback,
                    format!("revision {} is below the last accepted revision {min}", engine.revision()),
                ));
            }
        }
        if let Some(exp) = engine.expires_at() {
            if exp < opts.now {
                return Err(expired("snapshot", exp, opts.now));
            }
        }
        engine.signed_expires_at = engine.expires_at;
        Ok(engine)
    }

    /// Applies a signed delta (SPEC §4.2, §4.4) atomically: verifies the envelope with the key
    /// named by `keyId`, then rejects a delta that goes back (`to` below the revision, or a
    /// renewal of an older revision: `ROLLBACK`), one that does not follow the revision
    /// (`REVISION_MISMATCH`) and one whose `expiresAt` is before `now` (`EXPIRED`). On success
    /// [`Engine::signed_expires_at`] becomes the delta's `expiresAt` (kept when it has none);
    /// on any error nothing changes.
    pub fn apply_signed_delta(&mut self, envelope: &str, keys: &BTreeMap<String, String>, now: u64) -> Result<()> {
        let env = Envelope::parse_as(envelope, ErrorCode::InvalidDelta)?;
        let delta = Delta::parse(&env.verified_text(keys)?)?;
        if delta.to.0 < self.revision {
            return Err(Error::new(
                ErrorCode::Rollback,
                format!("signed delta to revision {} goes back from revision {}", delta.to.0, self.revision),
            ));
        }
        if delta.from.0 != self.revision {
            return Err(Error::new(
                ErrorCode::RevisionMismatch,
                format!("delta is from revision {} but the engine is at revision {}", delta.from.0, self.revision),
            ));
        }
        if let Some(exp) = delta.expires_at {
            if exp.0 < now {
                return Err(expired("signed delta", exp.0, now));
            }
        }
        self.apply_delta(&delta)?;
        if let Some(exp) = delta.expires_at {
            self.signed_expires_at = Some(exp.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn keys(secret: &[u8; 32]) -> BTreeMap<String, String> {
        BTreeMap::from([("k1".to_owned(), Envelope::public_key(secret))])
    }

    #[test]
    fn round_trip_and_failures() {
        let secret = [7u8; 32];
        let snap = br#"{"format":"fleetgate/snapshot@1","revision":5,"expiresAt":100}"#;
        let env = serde_json::to_string(&Envelope::sign(snap, "k1", &secret)).unwrap();
        let ok = Engine::from_signed(&env, &keys(&secret), VerifyOptions { now: 50, min_revision: Some(5) }).unwrap();
        assert_eq!(ok.revision(), 5);
        let code = |r: Result<Engine>| r.err().map(|e| e.code());
        assert_eq!(
            code(Engine::from_signed(&env, &keys(&[8u8; 32]), VerifyOptions { now: 50, min_revision: None })),
            Some("BAD_SIGNATURE")
        );
        assert_eq!(code(Engine::from_signed(&env, &BTreeMap::new(), VerifyOptions::default())), Some("UNKNOWN_KEY"));
        assert_eq!(
            code(Engine::from_signed(&env, &keys(&secret), VerifyOptions { now: 50, min_revision: Some(6) })),
            Some("ROLLBACK")
        );
        assert_eq!(
            code(Engine::from_signed(&env, &keys(&secret), VerifyOptions { now: 101, min_revision: None })),
            Some("EXPIRED")
        );
        let mut tampered: Envelope = serde_json::from_str(&env).unwrap();
        tampered.payload = b64url(br#"{"format":"fleetgate/snapshot@1","revision":9}"#);
        let tampered = serde_json::to_string(&tampered).unwrap();
        assert_eq!(
            code(Engine::from_signed(&tampered, &keys(&secret), VerifyOptions::default())),
            Some("BAD_SIGNATURE")
        );
        assert_eq!(ok.signed_expires_at(), Some(100));
        assert_eq!(Engine::from_json(std::str::from_utf8(snap).unwrap()).unwrap().signed_expires_at(), None);
    }

    #[test]
    fn a_signature_over_the_base64_text_is_refused() {
        let secret = [7u8; 32];
        let snap = br#"{"format":"fleetgate/snapshot@1","revision":5}"#;
        let mut env = Envelope::sign(snap, "k1", &secret);
        env.signature = b64url(&SigningKey::from_bytes(&secret).sign(env.payload.as_bytes()).to_bytes());
        let r = Engine::from_signed(&env.to_json(), &keys(&secret), VerifyOptions::default());
        assert_eq!(r.err().map(|e| e.code()), Some("BAD_SIGNATURE"));
    }

    fn signed(delta: &Delta, secret: &[u8; 32]) -> String {
        Envelope::sign(delta.to_json().as_bytes(), "k1", secret).to_json()
    }

    #[test]
    fn signed_deltas_renew_reject_and_stay_atomic() {
        let secret = [7u8; 32];
        let ks = keys(&secret);
        let snap = br#"{"format":"fleetgate/snapshot@1","revision":5,"expiresAt":100,
            "orgs":[{"id":"acme","name":"ACME"}],"devices":[{"id":"d1","name":"D","org":"acme"}]}"#;
        let env = Envelope::sign(snap, "k1", &secret).to_json();
        let mut e = Engine::from_signed(&env, &ks, VerifyOptions { now: 10, min_revision: None }).unwrap();
        let code = |r: Result<()>| r.err().map(|e| e.code());
        let remove = || vec![crate::delta::Op::RemoveDevice { id: crate::snapshot::Id::trusted("d1".to_owned()) }];
        // A delta without expiresAt keeps the previous expiry.
        e.apply_signed_delta(&signed(&Delta::new(5, 6, Vec::new()), &secret), &ks, 10).unwrap();
        assert_eq!((e.revision(), e.signed_expires_at()), (6, Some(100)));
        // A renewal extends it and keeps the revision.
        e.apply_signed_delta(&signed(&Delta::renewal(6).with_expiry(20, 200), &secret), &ks, 20).unwrap();
        assert_eq!((e.revision(), e.signed_expires_at()), (6, Some(200)));
        let before = e.to_json();
        assert_eq!(code(e.apply_signed_delta(&signed(&Delta::renewal(5), &secret), &ks, 20)), Some("ROLLBACK"));
        assert_eq!(
            code(e.apply_signed_delta(&signed(&Delta::new(4, 5, remove()), &secret), &ks, 20)),
            Some("ROLLBACK")
        );
        assert_eq!(
            code(e.apply_signed_delta(&signed(&Delta::renewal(7), &secret), &ks, 20)),
            Some("REVISION_MISMATCH")
        );
        assert_eq!(
            code(e.apply_signed_delta(&signed(&Delta::new(7, 8, remove()), &secret), &ks, 20)),
            Some("REVISION_MISMATCH")
        );
        let stale = Delta::new(6, 7, remove()).with_expiry(20, 30);
        assert_eq!(code(e.apply_signed_delta(&signed(&stale, &secret), &ks, 31)), Some("EXPIRED"));
        assert_eq!(code(e.apply_signed_delta(&signed(&stale, &[8u8; 32]), &ks, 20)), Some("BAD_SIGNATURE"));
        assert_eq!(code(e.apply_signed_delta(&signed(&stale, &secret), &BTreeMap::new(), 20)), Some("UNKNOWN_KEY"));
        let renew_with_ops = Delta { to: crate::snapshot::SafeInt(6), ..Delta::new(6, 7, remove()) };
        assert_eq!(code(e.apply_signed_delta(&signed(&renew_with_ops, &secret), &ks, 20)), Some("INVALID_DELTA"));
        assert_eq!(code(e.apply_signed_delta(&env, &ks, 20)), Some("INVALID_DELTA"), "a snapshot is not a delta");
        assert_eq!(code(e.apply_signed_delta("{", &ks, 20)), Some("INVALID_JSON"));
        assert_eq!(code(e.apply_signed_delta("{}", &ks, 20)), Some("INVALID_DELTA"));
        let breaks =
            Delta::new(6, 7, vec![crate::delta::Op::RemoveOrg { id: crate::snapshot::Id::trusted("acme".into()) }]);
        assert_eq!(
            code(e.apply_signed_delta(&signed(&breaks.with_expiry(20, 300), &secret), &ks, 20)),
            Some("UNKNOWN_REFERENCE")
        );
        assert_eq!((e.to_json(), e.signed_expires_at()), (before, Some(200)), "failures change nothing");
        e.apply_signed_delta(&signed(&stale, &secret), &ks, 30).unwrap();
        assert_eq!((e.revision(), e.signed_expires_at(), e.expires_at()), (7, Some(30), Some(30)));
        // An unsigned delta never moves the signed expiry.
        e.apply_delta(&Delta::renewal(7).with_expiry(40, 400)).unwrap();
        assert_eq!((e.signed_expires_at(), e.expires_at()), (Some(30), Some(400)));
    }
}

crate::snapshot::object_only!(Envelope);
