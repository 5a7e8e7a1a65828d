//! Credentials: Argon2id hashes for passwords and claim codes (both low-entropy secrets),
//! SHA-256 for random session and invite tokens (256-bit, so a fast hash suffices).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Hashes a password with Argon2id (default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks a password against a stored Argon2 hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A fixed Argon2id hash that no password matches: verified against when a login names an
/// unknown email, so that such a login costs the same as one for a known email.
pub fn dummy_hash() -> String {
    let salt = SaltString::encode_b64(b"fleetgate-dummy!").unwrap_or_else(|_| SaltString::generate(&mut OsRng));
    Argon2::default().hash_password(b"no password matches this hash", &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// A fresh random token (32 bytes, base64url).
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `token` has the shape of the session tokens [`new_token`] makes (43 base64url
/// characters).
pub fn is_session_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh random session id (16 bytes, base64url): the `sid` of access tokens.
pub fn new_session_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// 32 random bytes (signing keys).
pub fn random_key() -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The SHA-256 of a token or code, hex: what the store keeps.
pub fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of hex (32 bytes exactly).
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of threads for Argon2 (each computation takes ~19 MiB and tens of
/// milliseconds): it bounds the CPU and the memory hashing may take, whatever the load, and
/// refuses work beyond a short queue instead of piling it up.
pub struct HashPool {
    tx: std::sync::mpsc::Sender<Job>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
}

impl HashPool {
    /// `threads` workers, at most `limit` computations queued or running.
    pub fn new(threads: usize, limit: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || loop {
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start a hashing thread: {e}");
            }
        }
        Self { tx, queued: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)), limit }
    }

    /// Runs `f` on the pool; `None` when the queue is full or the pool is gone.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        use std::sync::atomic::Ordering;
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let (otx, orx) = tokio::sync::oneshot::channel();
        let queued = self.queued.clone();
        let job: Job = Box::new(move || {
            let _ = otx.send(f());
            queued.fetch_sub(1, Ordering::SeqCst);
        });
        if self.tx.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        orx.await.ok()
    }
}
