//! Signed snapshot envelopes (SPEC §4.4) for the edge: Ed25519 over the snapshot JSON bytes,
//! with key ids, rollback protection (`minRevision`) and expiry (`expiresAt`).

use std::collections::BTreeMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

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

/// A signed envelope (SPEC §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// Always `fleetgate/signed@1`.
    pub format: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// base64url of the snapshot JSON bytes.
    pub payload: String,
    /// base64url of the Ed25519 signature over the snapshot JSON bytes.
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
    /// Signs snapshot JSON bytes with a 32-byte Ed25519 secret key.
    pub fn sign(snapshot_json: &[u8], key_id: &str, secret: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(secret);
        let sig = key.sign(snapshot_json);
        Self {
            format: SIGNED_FORMAT.to_owned(),
            key_id: key_id.to_owned(),
            payload: b64url(snapshot_json),
            signature: b64url(&sig.to_bytes()),
        }
    }

    /// The base64url public key of a 32-byte secret key.
    pub fn public_key(secret: &[u8; 32]) -> String {
        b64url(SigningKey::from_bytes(secret).verifying_key().as_bytes())
    }

    /// Parses envelope JSON text.
    pub fn parse(text: &str) -> Result<Self> {
        let env: Envelope = serde_json::from_str(text)
            .map_err(|e| Error::from_json(text, &e, ErrorCode::InvalidSnapshot, "signed envelope"))?;
        if env.format != SIGNED_FORMAT {
            return Err(Error::new(
                ErrorCode::InvalidSnapshot,
                format!("unknown envelope format (expected `{SIGNED_FORMAT}`)"),
            ));
        }
        Ok(env)
    }

    /// Verifies the signature with the named key and returns the snapshot JSON bytes.
    pub fn verify(&self, keys: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        let key_text = keys
            .get(&self.key_id)
            .ok_or_else(|| Error::new(ErrorCode::UnknownKey, format!("unknown key id `{}`", self.key_id)))?;
        let key_bytes: [u8; 32] = B64.decode(key_text).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
            Error::new(ErrorCode::UnknownKey, format!("key `{}` is not a 32-byte base64url key", self.key_id))
        })?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| {
            Error::new(ErrorCode::UnknownKey, format!("key `{}` is not an Ed25519 public key", self.key_id))
        })?;
        let bad = |why: &str| Error::new(ErrorCode::BadSignature, format!("signature of key `{}` {why}", self.key_id));
        let sig_bytes: [u8; 64] = B64
            .decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("is not 64 base64url bytes"))?;
        let sig = Signature::from_bytes(&sig_bytes);
        let payload = B64.decode(&self.payload).map_err(|_| bad("covers a payload that is not base64url"))?;
        // The signature covers the snapshot JSON bytes; a signature over the payload's base64url
        // text is accepted too (both readings of SPEC §4.4 need the key to produce).
        if key.verify(&payload, &sig).is_ok() || key.verify(self.payload.as_bytes(), &sig).is_ok() {
            Ok(payload)
        } else {
            Err(bad("does not verify"))
        }
    }
}

impl Engine {
    /// Loads a signed snapshot: verifies it, then rejects rollback and expiry (SPEC §4.4).
    pub fn from_signed(envelope: &str, keys: &BTreeMap<String, String>, opts: VerifyOptions) -> Result<Self> {
        let env = Envelope::parse(envelope)?;
        let payload = env.verify(keys)?;
        let text = String::from_utf8(payload)
            .map_err(|_| Error::new(ErrorCode::InvalidJson, "signed payload is not UTF-8"))?;
        let engine = Engine::from_json(&text)?;
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
                return Err(Error::new(ErrorCode::Expired, format!("snapshot expired at {exp}, now is {}", opts.now)));
            }
        }
        Ok(engine)
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
    }
}
