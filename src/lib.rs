//! fleetgate: the permission engine for multi-tenant IoT fleets.
//!
//! Organizations nest into sub-organizations; users hold roles made of permissions in
//! memberships; devices belong to one organization and optionally one owner. One [`Engine`]
//! loads a snapshot (SPEC §4.1), answers who may view or control what (SPEC §3), applies
//! deltas atomically (SPEC §4.2), decides commands (SPEC §5) and projects per-viewer
//! snapshots (SPEC §4.3); for the edge it verifies signed snapshots and deltas (SPEC §4.4) and
//! access tokens (SPEC §4.5). The same crate runs natively (server, CLI) and as WebAssembly.

pub mod authority;
pub mod command;
pub mod decide;
pub mod delta;
pub mod engine;
pub mod error;
pub mod generate;
mod index;
pub mod model;
pub mod preview;
pub mod project;
pub mod signed;
pub mod snapshot;
mod tagged;
pub mod token;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use command::Command;
pub use decide::{Code, Decision};
pub use delta::{Delta, Op};
pub use engine::Engine;
pub use error::{Error, ErrorCode, Result};
pub use model::{Action, Permission, Perms, Plan, Status};
pub use snapshot::SnapshotDoc;
pub use token::{sign_token, verify_token, TokenClaims};
