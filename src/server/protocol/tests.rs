//! Unit tests of the request decoder.

use super::*;

fn encoded(reply: &Reply) -> String {
    let mut out = Vec::new();
    encode(reply, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn encodes_like_json_dumps() {
    // Expected values produced by Python 3: json.dumps({"path": ...}).
    assert_eq!(
        encoded(&Reply::Path("/s/refs/x".into())),
        r#"{"path": "/s/refs/x"}"#
    );
    assert_eq!(encoded(&Reply::NoObject), r#"{"path": null}"#);
    assert_eq!(
        encoded(&Reply::Path("/t/é😀\u{7f}\u{1}\"\\\n".into())),
        r#"{"path": "/t/\u00e9\ud83d\ude00\u007f\u0001\"\\\n"}"#
    );
    assert_eq!(
        encoded(&Reply::Error("a\tb\u{8}\u{c}\r".into())),
        r#"{"error": "a\tb\b\f\r"}"#
    );
}

#[test]
fn non_utf8_path_is_an_error_reply() {
    use std::os::unix::ffi::OsStrExt;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/x/\xff"));
    let text = encoded(&Reply::Path(path));
    assert!(text.starts_with(r#"{"error": "path /x/"#), "{text}");
    let _: Value = serde_json::from_str(&text).unwrap();
}

#[test]
fn in_place_reading_agrees_with_serde_json() {
    for text in [
        r#"{"method": "read-tree", "object-id": "x"}"#,
        r#"{"method":"read-tree","object-id":"x"}"#,
        " {\t\"a\" :\r\n\"b\" , \"c\": null } ",
        r#"{}"#,
        r#"{"": ""}"#,
        r#"{"k": "\u00e9"}"#,
        r#"{"k": "é😀"}"#,
        r#"{"k": "a", "k": "b"}"#,
        r#"{"k": 1}"#,
        r#"{"k": nullx}"#,
        r#"{"k": "a",}"#,
        r#"{"k": "a"} x"#,
        r#"{"k" "a"}"#,
        "{\"k\": \"a\u{1}\"}",
        r#"{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9"}"#,
        r#"["k"]"#,
        "",
    ] {
        let flat = Members::flat(text);
        let parsed: Option<Map<String, Value>> = serde_json::from_str(text).ok();
        if let Some(Members::Flat { members, len }) = &flat {
            let parsed =
                parsed.unwrap_or_else(|| panic!("{text:?} read in place but not valid JSON"));
            assert_eq!(parsed.len(), *len, "{text:?}");
            for (name, value) in &members[..*len] {
                let expected = match value {
                    Some(v) => Value::String((*v).to_owned()),
                    None => Value::Null,
                };
                assert_eq!(parsed.get(*name), Some(&expected), "{text:?}");
            }
        }
    }
    assert!(Members::flat(r#"{"method": "read-tree", "object-id": "x"}"#).is_some());
    assert!(Members::flat(r#"{"k": "\u00e9"}"#).is_none());
    assert!(Members::flat(r#"{"k": "a", "k": "b"}"#).is_none());
}

#[test]
fn decodes_and_validates() {
    assert_eq!(
        decode(br#"{"method":"read-tree","object-id":"a\u00e9"}"#).unwrap(),
        Request::ReadTree {
            object_id: ObjectIdBuf::new("a\u{e9}".into()).unwrap()
        }
    );
    assert_eq!(
        decode(br#"{"method": "mkdtemp"}"#).unwrap(),
        Request::Mkdtemp {
            prefix: "tmp".into(),
            suffix: String::new()
        }
    );
    for bad in [
        &b"\xff"[..],
        b"{",
        b"[]",
        b"{}",
        br#"{"method": 1}"#,
        br#"{"method": "nope"}"#,
        br#"{"method": "read-tree"}"#,
        br#"{"method": "read-tree", "object-id": null}"#,
        br#"{"method": "read-tree", "object-id": ".."}"#,
        br#"{"method": "source", "name": "a/b"}"#,
        br#"{"method": "mkdtemp", "prefix": "../x"}"#,
        br#"{"method": "mkdtemp", "suffix": 3}"#,
        br#"{"method": "read-tree-at", "object-id": "x", "target": "", "subtree": "/"}"#,
        br#"{"method": "read-tree-at", "object-id": "x", "target": "/t", "subtree": "a\u0000"}"#,
    ] {
        assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}
