//! The bundled demo world: the manufacturer of the conformance vectors (regional offices,
//! distributors, end clients, a family sharing devices, a second tenant), with demo logins.

use serde_json::{json, Value};

/// The password of every demo login (shown on the sign-in page in demo mode).
pub const DEMO_PASSWORD: &str = "demo-password";

const VECTOR: &str = include_str!("../../tests/vectors/manufacturer.json");

/// Who to sign in as, and what each login shows.
const LOGINS: &[(&str, &str)] = &[
    ("ceo", "Manufacturer admin (ACME Devices): sees every device of the company"),
    ("eu-admin", "Regional admin (ACME Europe): sees the European subtree"),
    ("north-staff", "Distributor staff (Northern Distribution): sees the distributor's stock"),
    ("jones", "End client (Jones Household): sees and controls the household's devices"),
    ("jones-kid", "Family member (invited by Jones): sees only the devices shared with them"),
    ("kim", "End client with the default User role: an empty screen until given permissions"),
    ("us-staff", "Staff of ACME Americas, whose role table adds control"),
    ("globex-admin", "Admin of another tenant (Globex)"),
];

/// Claim codes of unowned demo devices.
pub const CLAIM_CODES: &[(&str, &str)] =
    &[("lab-1", "ACME-0001"), ("eu-demo", "ACME-0002"), ("north-stock-1", "ACME-0003"), ("south-1", "ACME-0004")];

/// The demo seed: `{"snapshot", "passwords", "claimCodes"}`.
pub fn seed() -> Value {
    let vector: Value = serde_json::from_str(VECTOR).unwrap_or(Value::Null);
    let snapshot = vector.get("snapshot").cloned().unwrap_or(Value::Null);
    let passwords: serde_json::Map<String, Value> = snapshot
        .get("users")
        .and_then(Value::as_array)
        .map(|users| {
            users
                .iter()
                .filter(|u| u.get("status").and_then(Value::as_str) == Some("active"))
                .filter_map(|u| u.get("id").and_then(Value::as_str))
                .map(|id| (id.to_owned(), json!(DEMO_PASSWORD)))
                .collect()
        })
        .unwrap_or_default();
    let claims: serde_json::Map<String, Value> = CLAIM_CODES.iter().map(|(d, c)| ((*d).to_owned(), json!(c))).collect();
    json!({"snapshot": snapshot, "passwords": passwords, "claimCodes": claims})
}

/// The demo logins for the sign-in page.
pub fn logins() -> Value {
    json!({
        "password": DEMO_PASSWORD,
        "logins": LOGINS.iter().map(|(id, what)| json!({"user": id, "email": format!("{id}@example.test"), "description": what})).collect::<Vec<_>>(),
        "claimCodes": CLAIM_CODES.iter().map(|(d, c)| json!({"device": d, "code": c})).collect::<Vec<_>>(),
    })
}
