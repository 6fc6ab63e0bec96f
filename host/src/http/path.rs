//! The one spelling of a request path that routing, static files and apps all see.
//!
//! Routes match a prefix of the path, while static files decode it: if each looked at the
//! path as sent, `/%6fld/secret.txt`, `//old/secret.txt` or `/./old/secret.txt` would
//! slip past a route for `/old` and still name `old/secret.txt` on disk. So, as nginx does
//! before it matches locations, the gateway normalises the path once, before routing,
//! and the request carries only the normal form from there on:
//! - every byte has one spelling. A character that may stand raw in a segment
//!   (`pchar` of RFC 3986 §3.3: letters, digits, `-._~`, the sub-delims `!$&'()*+,;=`,
//!   `:` and `@`) is written raw, its `%XX` decoded; `/`, `%` and every other byte
//!   (controls, space, non-ASCII, ``"<>[\]^`{|}``) is written `%XX` with upper-case
//!   hex (§6.2.2.1), encoded when it arrives raw (hyper lets `"{|}[\]^` and UTF-8
//!   through).
//!   Otherwise `/%40internal` would miss a route for `/@internal` and still name
//!   `@internal` on disk;
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

use std::borrow::Cow;

/// Why a path has no normal form (the gateway answers 400 with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPath(pub &'static str);

/// The normal form of `path`, borrowed when `path` already is one. A path that does not
/// start with `/` (the `*` of `OPTIONS *`) is left as it is: nothing routes on it.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
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
                    return Err(BadPath("the path leads above the root"));
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

/// True for most paths, which have only raw `pchar` bytes, no empty segment before the
/// last, and no dot segment: those need no copy.
fn is_normal(path: &str) -> bool {
    if !path.bytes().all(|b| b == b'/' || stands_raw(b)) {
        return false;
    }
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// A byte that is written raw in a normal path segment: `pchar` minus escapes
/// (RFC 3986 §3.3).
fn stands_raw(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.' | b'_' | b'~' // unreserved
                | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' // sub-delims
                | b':' | b'@'
        )
}

/// `path` with each byte in its one spelling: raw if it [`stands_raw`] (or is `/`),
/// else `%XX` in upper case.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = if bytes[i] == b'%' {
            let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
            let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
                return Err(BadPath("the path has a malformed percent-escape"));
            };
            i += 3;
            // An escaped `/` stays a character of its segment, never a separator.
            let byte = (high * 16 + low) as u8;
            if !stands_raw(byte) {
                out.push_str(&format!("%{byte:02X}"));
                continue;
            }
            byte
        } else {
            i += 1;
            bytes[i - 1]
        };
        if byte == b'/' || stands_raw(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// Why a configured route prefix `route` would never match as written: it is not a
/// path, or it is not in the normal form requests are matched in. `None` when it is
/// fine. The one check of route prefixes, for wharf.toml and app manifests alike.
pub fn route_problem(route: &str) -> Option<String> {
    if !route.starts_with('/') || route.contains(['?', '#', ' ']) {
        return Some(format!("{route:?} must be a path starting with '/'"));
    }
    match normalize(route) {
        Ok(normal) if normal == route => None,
        Ok(normal) => Some(format!(
            "{route:?} must be written {normal:?}, the form requests are matched in"
        )),
        Err(BadPath(why)) => Some(format!("{route:?}: {why}")),
    }
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
            // Escapes of `/`, `%` and characters that may not stand raw stay, with
            // upper-case hex; those characters sent raw are encoded.
            ("/old%2fsecret.txt", "/old%2Fsecret.txt"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/%252e%252e/x", "/%252e%252e/x"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a\"b/{c}|d[e]\\f^g", "/a%22b/%7Bc%7D%7Cd%5Be%5D%5Cf%5Eg"),
            ("/%3c%3e%60%7f%00", "/%3C%3E%60%7F%00"),
            // Sub-delims, `:` and `@` stand raw, however they were sent.
            ("/%40internal/secret.txt", "/@internal/secret.txt"),
            ("/@internal", "/@internal"),
            ("/%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40", "/!$&'()*+,;=:@"),
            ("/!$&'()*+,;=:@", "/!$&'()*+,;=:@"),
            ("*", "*"),
        ];
        for (raw, normal) in cases {
            assert_eq!(normalize(raw).unwrap(), normal, "{raw}");
        }
        // A path already normal is not copied; one with a raw byte to encode is.
        assert!(matches!(normalize("/old/secret.txt"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/caf\u{e9}"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize("/%40x"), Ok(Cow::Owned(_))));
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
            assert!(normalize(raw).is_err(), "{raw}");
        }
    }
}
