//! The wire format: requests decoded from JSON and validated, replies
//! encoded byte for byte as the reference server (Python's `json.dumps`)
//! encodes them.
//!
//! Decoding accepts any valid JSON text (any spacing, any escaping) and
//! refuses, with a message for an `{"error": ...}` reply, whatever is not a
//! well-formed request: invalid UTF-8, malformed JSON, a non-object, a
//! missing or mistyped member, an unknown method, and every id, name,
//! prefix or suffix that [`crate::ids`] refuses. Members a method does not
//! use are ignored, as the reference ignores them.
//!
//! Encoding follows `json.dumps` with its defaults: `": "` after a name,
//! every character outside printable ASCII (including DEL) escaped as a
//! lowercase `\uXXXX`, with surrogate pairs above U+FFFF, and the short
//! escapes `\" \\ \n \r \t \b \f`.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ids::{self, ObjectIdBuf};

/// `read-tree`: the path of an object's tree.
pub const READ_TREE: &str = "read-tree";
/// `read-tree-at`: a read-only bind mount of (part of) a tree onto a target.
pub const READ_TREE_AT: &str = "read-tree-at";
/// `mkdtemp`: a fresh directory in the server's private temp root.
pub const MKDTEMP: &str = "mkdtemp";
/// `source`: the path `<store>/sources/<name>`.
pub const SOURCE: &str = "source";
/// `open-tree` (an extension): a detached read-only mount passed as a
/// descriptor.
pub const OPEN_TREE: &str = "open-tree";

/// The methods, by name.
#[derive(Debug, Clone, Copy)]
enum Method {
    ReadTree,
    ReadTreeAt,
    Mkdtemp,
    Source,
    OpenTree,
}

impl Method {
    const ALL: [(Method, &'static str); 5] = [
        (Method::ReadTree, READ_TREE),
        (Method::ReadTreeAt, READ_TREE_AT),
        (Method::Mkdtemp, MKDTEMP),
        (Method::Source, SOURCE),
        (Method::OpenTree, OPEN_TREE),
    ];
}

/// A decoded and validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `{"method": "read-tree", "object-id": ...}`
    ReadTree {
        /// A valid object id.
        object_id: ObjectIdBuf,
    },
    /// `{"method": "read-tree-at", "object-id": ..., "target": ..., "subtree": ...}`
    ReadTreeAt {
        /// A valid object id.
        object_id: ObjectIdBuf,
        /// Where to mount: a non-empty path without NUL.
        target: String,
        /// What to mount, resolved inside the tree; without NUL.
        subtree: String,
    },
    /// `{"method": "mkdtemp", "prefix": ..., "suffix": ...}`
    Mkdtemp {
        /// The name's prefix (`tmp` when null or missing).
        prefix: String,
        /// The name's suffix (empty when null or missing).
        suffix: String,
    },
    /// `{"method": "source", "name": ...}`
    Source {
        /// A valid source name.
        name: String,
    },
    /// `{"method": "open-tree", "object-id": ..., "subtree": ...}`
    OpenTree {
        /// A valid object id.
        object_id: ObjectIdBuf,
        /// What to open, resolved inside the tree (`/` when null or missing).
        subtree: String,
    },
}

/// Decodes and validates one request packet.
pub fn decode(packet: &[u8]) -> Result<Request> {
    let text = std::str::from_utf8(packet)
        .map_err(|e| Error::invalid(format!("request is not valid UTF-8: {e}")))?;
    let mut members = match Members::flat(text) {
        Some(members) => members,
        None => Members::parse(text)?,
    };
    let members = &mut members;
    let method = members.method()?;
    let request = match method {
        Method::ReadTree => Request::ReadTree {
            object_id: object_id(members)?,
        },
        Method::ReadTreeAt => {
            let object_id = object_id(members)?;
            let target = members.required_string("target")?;
            if target.is_empty() {
                return Err(Error::invalid("member \"target\" is empty"));
            }
            no_nul("target", &target)?;
            let subtree = members.required_string("subtree")?;
            no_nul("subtree", &subtree)?;
            Request::ReadTreeAt {
                object_id,
                target,
                subtree,
            }
        }
        Method::Mkdtemp => {
            let prefix = members
                .string("prefix")?
                .unwrap_or_else(|| "tmp".to_owned());
            let suffix = members.string("suffix")?.unwrap_or_default();
            ids::check_affix("prefix", prefix.as_bytes())?;
            ids::check_affix("suffix", suffix.as_bytes())?;
            Request::Mkdtemp { prefix, suffix }
        }
        Method::Source => {
            let name = members.required_string("name")?;
            ids::check_name("source name", name.as_bytes())?;
            Request::Source { name }
        }
        Method::OpenTree => {
            let object_id = object_id(members)?;
            let subtree = members.string("subtree")?.unwrap_or_else(|| "/".to_owned());
            no_nul("subtree", &subtree)?;
            Request::OpenTree { object_id, subtree }
        }
    };
    Ok(request)
}

fn object_id(members: &mut Members<'_>) -> Result<ObjectIdBuf> {
    ObjectIdBuf::new(members.required_string("object-id")?)
}

/// Most members the in-place reader takes; larger objects go to serde_json.
const MAX_FLAT: usize = 8;

/// The members of a request object.
#[expect(
    clippy::large_enum_variant,
    reason = "lives briefly on the stack; boxing would cost the allocation it avoids"
)]
enum Members<'a> {
    /// A flat object whose values are strings without escapes or nulls,
    /// with distinct names: read in place, without allocating (how every
    /// known client encodes its requests).
    Flat {
        members: [(&'a str, Option<&'a str>); MAX_FLAT],
        len: usize,
    },
    /// Any other object, parsed by serde_json.
    Json(Map<String, Value>),
}

impl<'a> Members<'a> {
    /// Reads `text` in place if it is a flat object (see [`Members::Flat`]);
    /// `None` for anything else, valid JSON or not, which [`Members::parse`]
    /// then handles. Both give the same members for what both accept.
    fn flat(text: &'a str) -> Option<Members<'a>> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let mut members = [("", None); MAX_FLAT];
        let mut len = 0;
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (name, next) = plain_string(text, i)?;
                i = skip_ws(b, next);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_ws(b, i + 1);
                let value = if b[i..].starts_with(b"null") {
                    i += 4;
                    None
                } else {
                    let (value, next) = plain_string(text, i)?;
                    i = next;
                    Some(value)
                };
                if len == MAX_FLAT || members[..len].iter().any(|(n, _)| *n == name) {
                    return None;
                }
                members[len] = (name, value);
                len += 1;
                i = skip_ws(b, i);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (skip_ws(b, i) == b.len()).then_some(Members::Flat { members, len })
    }

    /// Parses `text` as JSON; it must be an object.
    fn parse(text: &str) -> Result<Members<'static>> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("request is not valid JSON: {e}")))?;
        match value {
            Value::Object(members) => Ok(Members::Json(members)),
            other => Err(Error::invalid(format!(
                "request must be a JSON object, not {}",
                type_name(&other)
            ))),
        }
    }

    /// A string member; `None` when it is missing or null.
    fn string(&mut self, name: &str) -> Result<Option<String>> {
        match self {
            Members::Flat { members, len } => Ok(members[..*len]
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, value)| value.map(str::to_owned))),
            Members::Json(members) => match members.get_mut(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(std::mem::take(s))),
                Some(other) => Err(Error::invalid(format!(
                    "member {name:?} must be a string, not {}",
                    type_name(other)
                ))),
            },
        }
    }

    /// The `"method"` member, which must name a known method.
    fn method(&self) -> Result<Method> {
        let method = match self {
            Members::Flat { members, len } => members[..*len]
                .iter()
                .find(|(n, _)| *n == "method")
                .map(|(_, value)| value.ok_or("null")),
            Members::Json(members) => members.get("method").map(|value| match value {
                Value::String(s) => Ok(s.as_str()),
                other => Err(type_name(other)),
            }),
        };
        match method {
            None => Err(Error::invalid("member \"method\" is missing")),
            Some(Err(kind)) => Err(Error::invalid(format!(
                "member \"method\" must be a string, not {kind}"
            ))),
            Some(Ok(name)) => Method::ALL
                .into_iter()
                .find_map(|(method, known)| (known == name).then_some(method))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown method {name:?} (known: {READ_TREE}, {READ_TREE_AT}, {MKDTEMP}, {SOURCE}, {OPEN_TREE})"
                    ))
                }),
        }
    }

    /// A string member that must be there.
    fn required_string(&mut self, name: &str) -> Result<String> {
        self.string(name)?.ok_or_else(|| {
            if self.contains(name) {
                Error::invalid(format!("member {name:?} must be a string, not null"))
            } else {
                Error::invalid(format!("member {name:?} is missing"))
            }
        })
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            Members::Flat { members, len } => members[..*len].iter().any(|(n, _)| *n == name),
            Members::Json(members) => members.contains_key(name),
        }
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A JSON string at `i` without escapes or control characters, and the
/// index after it.
fn plain_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let len = b[start..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[start + len] != b'"' {
        return None;
    }
    // Both ends are ASCII quotes, so this slices at character boundaries.
    Some((&text[start..start + len], start + len + 1))
}

fn no_nul(name: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(format!(
            "member {name:?} contains a NUL character"
        )));
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A reply, before encoding.
#[derive(Debug)]
pub enum Reply {
    /// `{"path": "<path>"}`; a path that is not UTF-8 is encoded as an error.
    Path(PathBuf),
    /// `{"path": null}`: no such object.
    NoObject,
    /// `{"fd": 0, "pin": 1}`: `open-tree`'s two descriptors travel as the
    /// packet's `SCM_RIGHTS` entries, in this order: the view, and the pin
    /// that keeps its object from eviction while open.
    Fd {
        /// The detached read-only mount.
        view: std::os::fd::OwnedFd,
        /// A descriptor holding a shared `flock` on the object.
        pin: std::os::fd::OwnedFd,
    },
    /// `{"error": "<message>"}`.
    Error(String),
}

impl Reply {
    /// The reply for a failed request.
    pub fn error(e: &Error) -> Reply {
        Reply::Error(e.message().to_owned())
    }
}

/// Encodes `reply` into `out` (cleared first), as `json.dumps` would.
pub fn encode(reply: &Reply, out: &mut Vec<u8>) {
    out.clear();
    match reply {
        Reply::Path(path) => match path.to_str() {
            Some(text) => {
                out.extend_from_slice(b"{\"path\": ");
                push_string(out, text);
                out.push(b'}');
            }
            None => {
                let message = format!(
                    "path {} is not valid UTF-8 and cannot be sent in JSON",
                    path.display()
                );
                encode(&Reply::Error(message), out);
            }
        },
        Reply::NoObject => out.extend_from_slice(b"{\"path\": null}"),
        Reply::Fd { .. } => out.extend_from_slice(b"{\"fd\": 0, \"pin\": 1}"),
        Reply::Error(message) => {
            out.extend_from_slice(b"{\"error\": ");
            push_string(out, message);
            out.push(b'}');
        }
    }
}

/// Appends `s` as a JSON string with `json.dumps`'s ASCII escaping.
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // Fast path: printable ASCII without quote or backslash goes as is.
    let plain = s
        .bytes()
        .take_while(|b| matches!(b, b' '..=b'~') && *b != b'"' && *b != b'\\')
        .count();
    out.extend_from_slice(&s.as_bytes()[..plain]);
    let mut units = [0u16; 2];
    for c in s[plain..].chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                for unit in c.encode_utf16(&mut units) {
                    push_unicode_escape(out, *unit);
                }
            }
        }
    }
    out.push(b'"');
}

fn push_unicode_escape(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

#[cfg(test)]
mod tests;
