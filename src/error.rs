//! One error type for every fallible engine operation, with the stable codes of SPEC §6.4.

use std::fmt;

/// The stable error codes of SPEC §6.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The input is not well-formed JSON.
    InvalidJson,
    /// A snapshot breaks the schema: unknown field, wrong type, bad id.
    InvalidSnapshot,
    /// A delta breaks the schema, has an unknown op, `to < from`, or `to = from` with ops.
    InvalidDelta,
    /// A command is not a well-formed command of SPEC §5.
    InvalidCommand,
    /// Two entities share an id (memberships: user and org).
    DuplicateId,
    /// A reference does not resolve, or a removed entity does not exist.
    UnknownReference,
    /// The org parent chain loops.
    OrgCycle,
    /// An org is deeper than five levels.
    DepthExceeded,
    /// A device owner holds no membership in the device's org.
    OwnerNotMember,
    /// A membership's role is not defined for its org.
    UnknownRole,
    /// A role table names a permission that does not exist.
    UnknownPermission,
    /// A delta's `from` is not the engine's revision.
    RevisionMismatch,
    /// A signed envelope's signature does not verify.
    BadSignature,
    /// A signed envelope names a key the caller did not give.
    UnknownKey,
    /// A signed snapshot or delta is older than the last accepted revision.
    Rollback,
    /// A signed snapshot's or delta's `expiresAt`, or an access token's `exp`, is past.
    Expired,
    /// The active org is not one the user may switch to.
    NotSwitchable,
    /// An access token is not a well-formed SPEC §4.5 JWT, or its claims have the wrong shape.
    BadToken,
    /// A JS argument of the wrong type (the wasm boundary).
    InvalidArgument,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "INVALID_JSON",
            Self::InvalidSnapshot => "INVALID_SNAPSHOT",
            Self::InvalidDelta => "INVALID_DELTA",
            Self::InvalidCommand => "INVALID_COMMAND",
            Self::DuplicateId => "DUPLICATE_ID",
            Self::UnknownReference => "UNKNOWN_REFERENCE",
            Self::OrgCycle => "ORG_CYCLE",
            Self::DepthExceeded => "DEPTH_EXCEEDED",
            Self::OwnerNotMember => "OWNER_NOT_MEMBER",
            Self::UnknownRole => "UNKNOWN_ROLE",
            Self::UnknownPermission => "UNKNOWN_PERMISSION",
            Self::RevisionMismatch => "REVISION_MISMATCH",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::UnknownKey => "UNKNOWN_KEY",
            Self::Rollback => "ROLLBACK",
            Self::Expired => "EXPIRED",
            Self::NotSwitchable => "NOT_SWITCHABLE",
            Self::BadToken => "BAD_TOKEN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
        }
    }
}

/// An engine error: a stable code and a message naming the offending id or field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

impl Error {
    /// Builds an error from a code and a message (lowercase, no trailing period).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorCode {
        self.code
    }

    /// The stable code string, e.g. `UNKNOWN_REFERENCE`.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Maps a `serde_json` error on `text`: text that is not JSON at all is `INVALID_JSON`
    /// (even when the schema check failed first), well-formed JSON of the wrong shape `schema`.
    pub(crate) fn from_json(text: &str, err: &serde_json::Error, schema: ErrorCode, what: &str) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Self::new(ErrorCode::InvalidJson, format!("{what}: {err}"))
            }
            Category::Data => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Err(syntax) => Self::new(ErrorCode::InvalidJson, format!("{what}: {syntax}")),
                Ok(_) => Self::new(schema, format!("{what}: {err}")),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of engine operations.
pub type Result<T> = std::result::Result<T, Error>;
