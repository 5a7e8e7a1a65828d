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
    /// (even when the schema check failed first), well-formed JSON of the wrong shape `schema`,
    /// with the path of the offending value (`orgs[3].suspended`) in the message.
    pub(crate) fn from_json(text: &str, err: &serde_json::Error, schema: ErrorCode, what: &str) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Self::new(ErrorCode::InvalidJson, format!("{what}: {err}"))
            }
            Category::Data => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Err(syntax) => Self::new(ErrorCode::InvalidJson, format!("{what}: {syntax}")),
                Ok(_) => {
                    let (path, detail) = json_error_parts(text, err);
                    if path.is_empty() {
                        Self::new(schema, format!("{what}: {detail}"))
                    } else {
                        Self::new(schema, format!("{what} at `{path}`: {detail}"))
                    }
                }
            },
        }
    }
}

/// Marks the path a tagged object's reader (`src/tagged.rs`) puts in front of its message:
/// `\u{1}ops[0].device.owner\u{1}invalid type …`, read back by [`json_error_parts`].
pub(crate) const PATH_MARK: char = '\u{1}';

/// The path of the value a data error of `serde_json` on `text` is about (`ops[0].device.owner`,
/// empty for the whole document) and the error's message without its position.
pub(crate) fn json_error_parts(text: &str, err: &serde_json::Error) -> (String, String) {
    let mut detail = err.to_string();
    if err.line() > 0 {
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        if detail.ends_with(&suffix) {
            detail.truncate(detail.len() - suffix.len());
        }
    }
    // A tagged object's reader (`src/tagged.rs`) names the path itself, from the document's
    // root: `serde_json`'s position is where the error surfaced, past the object.
    let marked = detail.strip_prefix(PATH_MARK).and_then(|rest| rest.split_once(PATH_MARK));
    let path = match marked {
        Some((sub, msg)) => {
            let sub = sub.to_owned();
            detail = msg.to_owned();
            sub
        }
        None if err.line() > 0 => path_at(text, offset_of(text, err.line(), err.column())),
        None => String::new(),
    };
    (path, detail)
}

/// Appends a path (`device.owner`, `[2]`) to another.
pub(crate) fn join_path(path: &mut String, sub: &str) {
    if !path.is_empty() && !sub.is_empty() && !sub.starts_with('[') {
        path.push('.');
    }
    path.push_str(sub);
}

/// The byte offset of a `serde_json` position (line from 1, column in bytes from 0).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    let mut lines = line;
    for (i, b) in text.bytes().enumerate() {
        if lines <= 1 {
            break;
        }
        if b == b'\n' {
            start = i + 1;
            lines -= 1;
        }
    }
    start.saturating_add(column)
}

/// The path of the value at byte `at` of well-formed JSON text: the keys and indices of every
/// container open there; the last object's key only once its `:` has been read (an error
/// about a key itself is about its object). Keys are shown as they are written, escapes and all.
fn path_at(text: &str, at: usize) -> String {
    // Per open container: `Some(index)` in an array; in an object `None` and its current key
    // (the span between the quotes), with `at_key` while the key is read and no `:` yet.
    let mut stack: Vec<(Option<usize>, usize, usize)> = Vec::new();
    let mut at_key = false;
    let (mut in_str, mut escaped) = (false, false);
    for (i, &b) in text.as_bytes().iter().enumerate().take(at) {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
                if let (true, Some(f)) = (at_key, stack.last_mut()) {
                    f.2 = i;
                }
            }
            continue;
        }
        match b {
            b'"' => {
                in_str = true;
                if let (true, Some(f)) = (at_key, stack.last_mut()) {
                    (f.1, f.2) = (i + 1, i + 1);
                }
            }
            b'{' => {
                stack.push((None, 0, 0));
                at_key = true;
            }
            b'[' => {
                stack.push((Some(0), 0, 0));
                at_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                at_key = false;
            }
            b':' => at_key = false,
            b',' => match stack.last_mut() {
                Some((Some(n), _, _)) => *n += 1,
                Some((None, _, _)) => at_key = true,
                None => {}
            },
            _ => {}
        }
    }
    if at_key {
        stack.pop();
    }
    let mut path = String::new();
    for (index, start, end) in stack {
        match index {
            Some(n) => {
                path.push('[');
                path.push_str(&n.to_string());
                path.push(']');
            }
            None => {
                let key = text.get(start..end.min(start + 64)).unwrap_or("");
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    join_path(&mut path, key);
                } else {
                    path.push_str("[\"");
                    path.push_str(key);
                    path.push_str("\"]");
                }
            }
        }
    }
    path
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of engine operations.
pub type Result<T> = std::result::Result<T, Error>;
