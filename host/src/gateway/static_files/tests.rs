use super::*;
use std::io::Read as _;
use std::os::unix::fs::symlink;

const CANARY: &str = "CANARY-outside-the-root";

/// `<tmp>/secret.txt` and `<tmp>/secretdir/secret.txt` hold the canary; `<tmp>/root` is
/// served and holds symlinks that lead to them.
struct Site {
    tmp: tempfile::TempDir,
    files: StaticFiles,
}

fn long_text(word: &str) -> String {
    format!("{word} ").repeat(200)
}

fn site(cache_control: Option<&str>) -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    std::fs::write(base.join("secret.txt"), CANARY).unwrap();
    std::fs::create_dir(base.join("secretdir")).unwrap();
    std::fs::write(base.join("secretdir/secret.txt"), CANARY).unwrap();

    let root = base.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
    std::fs::write(root.join("style.css"), long_text("body{color:red}")).unwrap();
    std::fs::write(root.join("photo.png"), vec![7u8; 4096]).unwrap();
    std::fs::write(root.join("app.js"), long_text("identity")).unwrap();
    std::fs::write(root.join("app.js.br"), "br-sibling").unwrap();
    std::fs::write(root.join("app.js.gz"), "gz-sibling").unwrap();
    std::fs::create_dir(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();

    symlink("../secret.txt", root.join("link")).unwrap();
    symlink("../secretdir", root.join("linkdir")).unwrap();
    symlink("..", root.join("up")).unwrap();
    // Files ServeDir opens without the request naming them must be confined too.
    std::fs::write(root.join("page.txt"), long_text("page")).unwrap();
    symlink("../secret.txt", root.join("page.txt.gz")).unwrap();
    std::fs::create_dir(root.join("trap")).unwrap();
    symlink("../../secret.txt", root.join("trap/index.html")).unwrap();
    // A symlink that stays inside the root is fine.
    symlink("hello.txt", root.join("alias.txt")).unwrap();

    let files = StaticFiles::new(&root, cache_control).unwrap();
    Site { tmp, files }
}

async fn get(site: &Site, uri: &str, headers: &[(&str, &str)]) -> (Response<()>, Bytes) {
    request(site, Method::GET, uri, "/", headers).await
}

async fn request(
    site: &Site,
    method: Method,
    uri: &str,
    prefix: &str,
    headers: &[(&str, &str)],
) -> (Response<()>, Bytes) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = site
        .files
        .serve(builder.body(()).unwrap(), prefix)
        .await
        .unwrap_or_else(GatewayError::into_response);
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), body)
}

fn header(response: &Response<()>, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn traversal_vectors_never_reach_outside_the_root() {
    let site = site(None);
    let canary_abs = site.tmp.path().join("secret.txt");
    let absolute = format!("/{}", canary_abs.display());
    let cases: &[(&str, StatusCode)] = &[
        ("/../secret.txt", StatusCode::BAD_REQUEST),
        ("/docs/../../secret.txt", StatusCode::BAD_REQUEST),
        ("/%2e%2e/secret.txt", StatusCode::BAD_REQUEST),
        ("/%2E%2E/secret.txt", StatusCode::BAD_REQUEST),
        ("/..%2fsecret.txt", StatusCode::BAD_REQUEST),
        // An encoded slash is never a separator (see crate::http::path).
        ("/docs%2Findex.html", StatusCode::BAD_REQUEST),
        ("/%252e%252e/secret.txt", StatusCode::NOT_FOUND),
        ("/%252e%252e%252fsecret.txt", StatusCode::NOT_FOUND),
        ("/..%5csecret.txt", StatusCode::BAD_REQUEST),
        ("/..%5c..%5csecret.txt", StatusCode::BAD_REQUEST),
        // The http crate (and so hyper) takes a raw backslash in the path.
        ("/..\\secret.txt", StatusCode::BAD_REQUEST),
        ("/docs\\..\\..\\secret.txt", StatusCode::BAD_REQUEST),
        ("/hello.txt%00", StatusCode::BAD_REQUEST),
        ("/%00/../secret.txt", StatusCode::BAD_REQUEST),
        ("/%c0%ae%c0%ae/secret.txt", StatusCode::BAD_REQUEST),
        ("/%c0%af..%c0%afsecret.txt", StatusCode::BAD_REQUEST),
        ("//etc/passwd", StatusCode::NOT_FOUND),
        (&absolute, StatusCode::NOT_FOUND),
        ("/link", StatusCode::NOT_FOUND),
        ("/linkdir/secret.txt", StatusCode::NOT_FOUND),
        ("/up/secret.txt", StatusCode::NOT_FOUND),
        ("/up/secretdir/secret.txt", StatusCode::NOT_FOUND),
        ("/trap/", StatusCode::NOT_FOUND),
        ("/trap/index.html", StatusCode::NOT_FOUND),
    ];
    for (uri, expected) in cases {
        for method in [Method::GET, Method::HEAD] {
            let (response, body) = request(&site, method.clone(), uri, "/", &[]).await;
            assert_eq!(response.status(), *expected, "{method} {uri}");
            assert!(
                !String::from_utf8_lossy(&body).contains(CANARY),
                "{method} {uri} leaked the canary"
            );
        }
    }
}

#[tokio::test]
async fn absolute_form_with_an_absolute_path_is_refused() {
    let site = site(None);
    let (response, body) = get(&site, "http://example.com//etc/passwd", &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&body).contains("root:"));
}

#[tokio::test]
async fn precompressed_sibling_that_leaves_the_root_is_skipped() {
    let site = site(None);
    let (response, body) = get(&site, "/page.txt", &[("accept-encoding", "gzip")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!String::from_utf8_lossy(&body).contains(CANARY));
    // It falls back to compressing page.txt itself.
    assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, long_text("page"));
}

#[tokio::test]
async fn traversal_under_a_prefix() {
    let site = site(None);
    for uri in ["/assets/../secret.txt", "/assets/%2e%2e/secret.txt"] {
        let (response, _) = request(&site, Method::GET, uri, "/assets", &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
    }
    for uri in ["/assets/link", "/assetshello.txt", "/hello.txt"] {
        let (response, _) = request(&site, Method::GET, uri, "/assets", &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn symlink_inside_the_root_is_served() {
    let site = site(None);
    let (response, body) = get(&site, "/alias.txt", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "hello, world\n");
}

#[tokio::test]
async fn serves_a_file_with_its_content_type() {
    let site = site(None);
    let (response, body) = get(&site, "/hello.txt", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "hello, world\n");
    assert!(header(&response, header::CONTENT_TYPE).starts_with("text/plain"));
    assert_eq!(header(&response, header::CONTENT_LENGTH), "13");
    assert!(response.headers().get(header::CACHE_CONTROL).is_none());

    let (response, _) = get(&site, "/style.css", &[]).await;
    assert!(header(&response, header::CONTENT_TYPE).starts_with("text/css"));
    let (response, _) = get(&site, "/photo.png", &[]).await;
    assert_eq!(header(&response, header::CONTENT_TYPE), "image/png");
}

#[tokio::test]
async fn head_has_headers_but_no_body() {
    let site = site(None);
    let (response, body) = request(&site, Method::HEAD, "/hello.txt", "/", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, header::CONTENT_LENGTH), "13");
    assert!(body.is_empty());

    // Also when the GET would be compressed on the fly.
    let accept = [("accept-encoding", "gzip")];
    let (response, body) = request(&site, Method::HEAD, "/style.css", "/", &accept).await;
    assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
    assert!(body.is_empty());
}

#[tokio::test]
async fn byte_ranges() {
    let site = site(None);
    let (response, body) = get(&site, "/hello.txt", &[("range", "bytes=0-4")]).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "hello");
    assert_eq!(header(&response, header::CONTENT_RANGE), "bytes 0-4/13");

    let (response, _) = get(&site, "/hello.txt", &[("range", "bytes=100-200")]).await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, header::CONTENT_RANGE), "bytes */13");

    // A range of a text file is sent as is even to a client that takes gzip: the
    // offsets are into the bytes on disk.
    let headers = [("range", "bytes=0-3"), ("accept-encoding", "gzip")];
    let (response, body) = get(&site, "/style.css", &headers).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "body");
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn not_modified_via_if_none_match() {
    let site = site(Some("public, max-age=60"));
    let (response, _) = get(&site, "/hello.txt", &[]).await;
    let etag = header(&response, header::ETAG).to_owned();

    let (response, body) = get(&site, "/hello.txt", &[("if-none-match", &etag)]).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&response, header::ETAG), etag);
    assert_eq!(
        header(&response, header::CACHE_CONTROL),
        "public, max-age=60"
    );

    let other = [("if-none-match", "\"something-else\"")];
    let (response, _) = get(&site, "/hello.txt", &other).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn not_modified_via_if_modified_since() {
    let site = site(None);
    let (response, _) = get(&site, "/hello.txt", &[]).await;
    let last_modified = header(&response, header::LAST_MODIFIED).to_owned();

    let since = [("if-modified-since", last_modified.as_str())];
    let (response, body) = get(&site, "/hello.txt", &since).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    let old = [("if-modified-since", "Thu, 01 Jan 1970 00:00:01 GMT")];
    let (response, _) = get(&site, "/hello.txt", &old).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding() {
    let site = site(None);
    let cases = [
        ("br, gzip", Some("br"), "br-sibling"),
        ("gzip", Some("gzip"), "gz-sibling"),
        ("br;q=0.5, gzip", Some("gzip"), "gz-sibling"),
    ];
    for (accept, encoding, expected) in cases {
        let (response, body) = get(&site, "/app.js", &[("accept-encoding", accept)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{accept}");
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            encoding,
            "{accept}"
        );
        assert_eq!(body, expected, "{accept}");
        assert_eq!(header(&response, header::VARY), "accept-encoding");
        assert!(header(&response, header::CONTENT_TYPE).contains("javascript"));
        // The sibling's own validator, still strong: it is a file on disk.
        assert!(!header(&response, header::ETAG).starts_with("W/"));
    }

    for accept in [None, Some("identity")] {
        let headers: Vec<_> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let (response, body) = get(&site, "/app.js", &headers).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body, long_text("identity"));
        assert_eq!(header(&response, header::VARY), "accept-encoding");
    }
}

#[tokio::test]
async fn text_without_a_sibling_is_compressed_on_the_fly() {
    let site = site(None);
    let original = long_text("body{color:red}");

    let (response, body) = get(&site, "/style.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
    assert!(header(&response, header::VARY).contains("accept-encoding"));
    assert!(header(&response, header::ETAG).starts_with("W/\""));
    // Small enough to be kept whole, so it goes out with its length.
    assert_eq!(
        header(&response, header::CONTENT_LENGTH),
        body.len().to_string()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, original);

    let (response, body) = get(&site, "/style.css", &[("accept-encoding", "br")]).await;
    assert_eq!(header(&response, header::CONTENT_ENCODING), "br");
    let mut text = String::new();
    brotli::Decompressor::new(&body[..], 4096)
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, original);

    // The weak ETag still matches the file for a revalidation.
    let etag = header(&response, header::ETAG).to_owned();
    let headers = [("accept-encoding", "br"), ("if-none-match", etag.as_str())];
    let (response, _) = get(&site, "/style.css", &headers).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&response, header::VARY), "accept-encoding");

    // Not for clients that do not take it, nor for images, nor for tiny files.
    let (response, body) = get(&site, "/style.css", &[]).await;
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(body, original);
    for uri in ["/photo.png", "/hello.txt"] {
        let (response, _) = get(&site, uri, &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers().get(header::CONTENT_ENCODING).is_none(),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn directories_serve_their_index() {
    let site = site(None);
    let (response, body) = get(&site, "/", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "<h1>home</h1>");
    assert!(header(&response, header::CONTENT_TYPE).starts_with("text/html"));

    let (response, body) = get(&site, "/docs/", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "<h1>docs</h1>");

    let (response, _) = get(&site, "/docs?x=1", &[]).await;
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&response, header::LOCATION), "/docs/?x=1");
}

#[tokio::test]
async fn mounted_under_a_prefix() {
    let site = site(None);
    let (response, body) = request(&site, Method::GET, "/assets/hello.txt", "/assets", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "hello, world\n");

    let (response, body) = request(&site, Method::GET, "/assets/", "/assets/", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "<h1>home</h1>");

    for (uri, location) in [("/assets", "/assets/"), ("/assets/docs", "/assets/docs/")] {
        let (response, _) = request(&site, Method::GET, uri, "/assets", &[]).await;
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT, "{uri}");
        assert_eq!(header(&response, header::LOCATION), location, "{uri}");
    }
}

#[tokio::test]
async fn cache_control_on_success_only() {
    let site = site(Some("public, max-age=3600"));
    let (response, _) = get(&site, "/hello.txt", &[]).await;
    assert_eq!(
        header(&response, header::CACHE_CONTROL),
        "public, max-age=3600"
    );
    let (response, _) = get(&site, "/hello.txt", &[("range", "bytes=0-1")]).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert!(response.headers().contains_key(header::CACHE_CONTROL));
    let (response, _) = get(&site, "/missing.txt", &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get(header::CACHE_CONTROL).is_none());
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let site = site(None);
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let (response, _) = request(&site, method.clone(), "/hello.txt", "/", &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(&response, header::ALLOW), "GET, HEAD");
    }
}

#[test]
fn root_must_be_an_existing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = StaticFiles::new(&missing, None).err().unwrap();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");

    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let err = StaticFiles::new(&file, None).err().unwrap();
    assert!(format!("{err:#}").contains("file.txt"), "{err:#}");

    assert!(StaticFiles::new(tmp.path(), Some("bad\nvalue")).is_err());
}

/// Waits until the files' timestamps are old enough for the cache to keep them
/// (just-written files are not kept: the next write may not change them).
async fn settle(root: &Path, names: &[&str]) {
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while names
        .iter()
        .any(|name| Identity::of(&std::fs::metadata(root.join(name)).unwrap()).is_racy())
    {
        assert!(
            std::time::Instant::now() < settled,
            "timestamps never settled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn files_left_uncompressed_are_answered_from_memory_to_clients_that_accept_compression() {
    let site = site(None);
    let root = site.tmp.path().join("root");
    // A png is never compressed; a tiny text is below the compression threshold.
    std::fs::write(root.join("tiny.txt"), "tiny").unwrap();
    settle(&root, &["photo.png", "tiny.txt"]).await;
    let browser = [("accept-encoding", "gzip, br")];
    for (uri, file) in [("/photo.png", "photo.png"), ("/tiny.txt", "tiny.txt")] {
        let (first, _) = get(&site, uri, &browser).await;
        assert_eq!(first.status(), StatusCode::OK, "{uri}");
        assert!(
            !first.headers().contains_key(header::CONTENT_ENCODING),
            "{uri}"
        );
        // The next request with the same Accept-Encoding looks up this key.
        let key = KeyRef {
            file,
            encoding: Encoding::Br,
        };
        assert!(
            site.files.cache.get(&key, &site.files.root_dir).is_some(),
            "{uri} is kept under the encoding its requests negotiate"
        );
        let (again, _) = get(&site, uri, &browser).await;
        assert_eq!(again.status(), StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn small_files_are_answered_from_memory_until_they_change() {
    let site = site(None);
    let root = site.tmp.path().join("root");
    std::fs::write(root.join("cached.txt"), "version 1").unwrap();
    std::fs::write(root.join("swapped.txt"), "swapped 1").unwrap();
    std::fs::write(root.join("doomed.txt"), "doomed").unwrap();
    std::fs::write(root.join("linked.txt"), "linked").unwrap();
    settle(
        &root,
        &["cached.txt", "swapped.txt", "doomed.txt", "linked.txt"],
    )
    .await;

    let (first, body) = get(&site, "/cached.txt", &[]).await;
    assert_eq!(body, "version 1");
    assert_eq!(site.files.cache.len(), 1, "a plain GET fills the cache");
    let (again, body) = get(&site, "/cached.txt", &[]).await;
    assert_eq!(body, "version 1");
    for name in [header::ETAG, header::LAST_MODIFIED, header::CONTENT_LENGTH] {
        assert_eq!(header(&first, name.clone()), header(&again, name));
    }
    let (head, body) = request(&site, Method::HEAD, "/cached.txt", "/", &[]).await;
    assert_eq!((head.status(), body.len()), (StatusCode::OK, 0));
    assert_eq!(header(&head, header::CONTENT_LENGTH), "9");
    let (range, body) = get(&site, "/cached.txt", &[("range", "bytes=0-6")]).await;
    assert_eq!(
        (range.status(), &body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"version"[..])
    );

    // Changed in place to the same length, replaced by rename, removed: each is
    // seen on the next request.
    std::fs::write(root.join("cached.txt"), "version 2").unwrap();
    assert_eq!(get(&site, "/cached.txt", &[]).await.1, "version 2");
    get(&site, "/swapped.txt", &[]).await;
    std::fs::write(root.join("swapped.new"), "swapped 2").unwrap();
    std::fs::rename(root.join("swapped.new"), root.join("swapped.txt")).unwrap();
    assert_eq!(get(&site, "/swapped.txt", &[]).await.1, "swapped 2");
    get(&site, "/doomed.txt", &[]).await;
    std::fs::remove_file(root.join("doomed.txt")).unwrap();
    assert_eq!(
        get(&site, "/doomed.txt", &[]).await.0.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(site.files.cache.len(), 0, "changed files leave the cache");

    // A cached file swapped for a symlink out of the root is not served from
    // memory, nor through the link.
    get(&site, "/linked.txt", &[]).await;
    assert_eq!(site.files.cache.len(), 1);
    std::fs::remove_file(root.join("linked.txt")).unwrap();
    symlink("../secret.txt", root.join("linked.txt")).unwrap();
    let (response, body) = get(&site, "/linked.txt", &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&body).contains(CANARY));
}

#[tokio::test]
async fn the_cache_keeps_one_entry_per_file_and_encoding_whatever_the_spelling() {
    let site = site(None);
    let root = site.tmp.path().join("root");
    std::fs::write(root.join("cached.txt"), long_text("cached")).unwrap();
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Identity::of(&std::fs::metadata(root.join("cached.txt")).unwrap()).is_racy() {
        assert!(
            std::time::Instant::now() < settled,
            "timestamps never settled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Unique paths that name the same file, and unique Accept-Encoding values that
    // negotiate the same two encodings: padding of unknown codings, large and unique.
    let padding = "x".repeat(8 * 1024);
    for i in 0..64 {
        let path = match i % 4 {
            0 => format!("/{}cached.txt", "./".repeat(i)),
            1 => format!("/{}cached.txt", "/".repeat(i)),
            2 => "/%63ached.txt".to_string(),
            _ => format!("/./{}/cached.txt", "/.".repeat(i)),
        };
        let accept = match i % 2 {
            0 => format!("x-{i}-{padding}, gzip"),
            _ => format!("x-{i}-{padding}"),
        };
        let (response, body) = get(&site, &path, &[("accept-encoding", &accept)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers().contains_key(header::CONTENT_ENCODING),
            i % 2 == 0,
            "{path}"
        );
        assert!(!body.is_empty());
    }
    assert_eq!(
        site.files.cache.len(),
        2,
        "one entry for cached.txt as gzip, one as identity"
    );
}

#[test]
fn the_encoding_is_negotiated_from_br_gzip_and_their_weights() {
    use Encoding::{Br, Gzip, Identity};
    let cases: &[(&[&str], Option<Encoding>)] = &[
        (&[], Some(Identity)),
        (&["gzip"], Some(Gzip)),
        (&["gzip, br"], Some(Br)),
        (&["br;q=0.5, gzip"], Some(Gzip)),
        (&["br;q=0.5, gzip;q=0.5"], Some(Br)),
        (&["x-gzip"], Some(Gzip)),
        (&["GZIP;Q=1.0"], Some(Gzip)),
        (&["deflate, zstd"], Some(Identity)),
        (&["gzip;q=0, br;q=0"], Some(Identity)),
        (&["*"], Some(Br)),
        (&["br;q=0, *"], Some(Gzip)),
        (&["gzip;q=2, br;q=0.x"], Some(Identity)),
        (&["identity;q=0"], None),
        (&["*;q=0"], None),
        (&["identity;q=0, gzip"], Some(Gzip)),
        (&["junk", "gzip;q=0.1"], Some(Gzip)),
    ];
    for (values, expected) in cases {
        let mut headers = HeaderMap::new();
        for value in *values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        }
        assert_eq!(negotiate(&headers), *expected, "{values:?}");
    }
}

#[test]
fn serve_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let files = StaticFiles::new(tmp.path(), None).unwrap();
    let future = files.serve(Request::new(()), "/");
    assert_send(&future);
}
