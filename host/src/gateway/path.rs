//! The one spelling of a request path that routing, static files and apps all see.
//!
//! Routes match a prefix of the path, while static files decode it: if each looked at the
//! path as sent, `/%6fld/secret.txt`, `//old/secret.txt` or `/./old/secret.txt` would
//! slip past a route for `/old` and still name `old/secret.txt` on disk. So, as nginx does
//! before it matches locations, the gateway normalises the path once, before routing,
//! and the request carries only the normal form from there on:
//! - `%XX` of an unreserved character (letters, digits, `-._~`; RFC 3986 §2.3) is
//!   decoded; every other escape stays encoded, its hex in upper case (§6.2.2.1);
//! - runs of `/` are merged into one;
//! - `.` segments are dropped and `..` removes the segment before it (§5.2.4);
//!   a `..` above the root is a 400, as in nginx;
//! - a malformed escape (`%`, `%4`, `%zz`) is a 400.
//!
//! Where wharf differs from nginx: nginx decodes `%2F` into a separator. wharf keeps it
//! encoded, as a character of its segment, so that it can neither move a request from
//! one route to another nor split a segment after routing. Apps receive it as sent
//! (an id such as `a%2Fb` stays one segment); static files refuse it, as no file name
//! holds a slash.

use super::GatewayError;
use std::borrow::Cow;

/// The normal form of `path`, borrowed when `path` already is one. A path that does not
/// start with `/` (the `*` of `OPTIONS *`) is left as it is: nothing routes on it.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, GatewayError> {
    if !path.starts_with('/') || is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    // A path ending in `/`, `/.` or `/..` names a directory: it keeps its last slash.
    let mut directory = false;
    for segment in decoded.split('/').skip(1) {
        directory = true;
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(GatewayError::BadRequest("the path leads above the root"));
                }
            }
            name => {
                segments.push(name);
                directory = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if directory || segments.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// True for most paths, which have no escape, no empty segment before the last, and no
/// dot segment: those need no copy.
fn is_normal(path: &str) -> bool {
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.contains('%')
            || segment == "."
            || segment == ".."
            || (segment.is_empty() && !last)
        {
            return false;
        }
    }
    true
}

/// `path` with escapes of unreserved characters decoded and the others in upper case.
fn decode_unreserved(path: &str) -> Result<String, GatewayError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
            return Err(GatewayError::BadRequest(
                "the path has a malformed percent-escape",
            ));
        };
        let byte = (high * 16 + low) as u8;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte);
        } else {
            out.push(b'%');
            out.extend(bytes[i + 1..i + 3].iter().map(u8::to_ascii_uppercase));
        }
        i += 3;
    }
    // Only ASCII escapes were replaced by ASCII bytes: still the UTF-8 it was.
    Ok(String::from_utf8(out).expect("escapes replaced by ASCII keep UTF-8 valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_canonical_spellings_become_the_one_path_they_name() {
        let cases = [
            ("/", "/"),
            ("/old/secret.txt", "/old/secret.txt"),
            ("/docs/", "/docs/"),
            ("/%6fld/secret.txt", "/old/secret.txt"),
            ("/%6Fld/%7euser", "/old/~user"),
            ("//old/secret.txt", "/old/secret.txt"),
            ("/old//secret.txt", "/old/secret.txt"),
            ("/./old/secret.txt", "/old/secret.txt"),
            ("/%2e/old/secret.txt", "/old/secret.txt"),
            ("/x/../old/secret.txt", "/old/secret.txt"),
            ("/x/%2E%2E/old", "/old"),
            ("/old/.", "/old/"),
            ("/old/x/..", "/old/"),
            ("/old//", "/old/"),
            ("/..a/b..", "/..a/b.."),
            ("/a/..", "/"),
            ("//", "/"),
            // Escapes of reserved and other characters stay, with upper-case hex.
            ("/old%2fsecret.txt", "/old%2Fsecret.txt"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/%252e%252e/x", "/%252e%252e/x"),
            ("/caf\u{e9}", "/caf\u{e9}"),
            ("*", "*"),
        ];
        for (raw, normal) in cases {
            assert_eq!(normalize(raw).unwrap(), normal, "{raw}");
        }
        // A path already normal is not copied.
        assert!(matches!(normalize("/old/secret.txt"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn a_path_above_the_root_or_with_a_broken_escape_is_a_bad_request() {
        for raw in [
            "/..",
            "/../x",
            "/a/../..",
            "/%2e%2e/x",
            "/x%",
            "/x%4",
            "/x%zz",
            "/%+1",
        ] {
            let err = normalize(raw).unwrap_err();
            assert!(matches!(err, GatewayError::BadRequest(_)), "{raw}: {err}");
        }
    }
}
