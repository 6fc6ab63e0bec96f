//! `Gateway::handle` in process, without sockets: a real runtime over real guests, sites
//! from a real wharf.toml, and requests handed straight to the gateway, to pin down
//! routing, redirects, HSTS and the answers for unknown hosts and paths.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::path::Path;
use std::sync::Arc;
use wharf::config::Config;
use wharf::db::Provider;
use wharf::gateway::{Connection, Gateway, ListenerId, Sites};
use wharf::runtime::Runtime;
use wharf_tests::{apps_dir, shared_cache_dir};

/// A gateway over the `hello` and `raw` guests and the sites of `config`; HTTPS
/// redirects point at `https_port`. The temporary directories live as long as it.
struct Fixture {
    gateway: Gateway,
    _apps: tempfile::TempDir,
    _data: tempfile::TempDir,
}

async fn gateway(config: &str, https_port: Option<u16>) -> Fixture {
    let apps = apps_dir(&["hello", "raw"]);
    let data = tempfile::tempdir().unwrap();
    let metrics = wharf::metrics::Metrics::new();
    let databases = Provider::new(None, data.path().to_owned(), &metrics)
        .await
        .unwrap();
    let runtime = Runtime::new(apps.path(), Some(shared_cache_dir()), databases).unwrap();
    runtime.load_all().await.unwrap();
    let config = Config::parse(config).unwrap();
    let sites = Sites::from_config(
        &config,
        https_port,
        &wharf::proxy::Upstreams::default(),
        None,
        &metrics,
    )
    .unwrap();
    Fixture {
        gateway: Gateway::new(
            Arc::clone(&runtime),
            sites,
            wharf::firewall::Firewall::build(&config.firewall, None),
            &config.limits,
            &config.log,
            metrics,
        ),
        _apps: apps,
        _data: data,
    }
}

/// The connection a request arrived on: over TLS with `sni`, or plain HTTP.
fn connection(tls: Option<&str>) -> Connection {
    Connection {
        peer: ([127, 0, 0, 1], 40000).into(),
        client: ([127, 0, 0, 1], 40000).into(),
        local: ([127, 0, 0, 1], if tls.is_some() { 443 } else { 80 }).into(),
        listener: ListenerId(0),
        tls: tls.is_some(),
        sni: tls.map(Arc::from),
    }
}

/// What the gateway answered, read whole.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl Fixture {
    /// GET `path` for `host` on `conn`, as hyper would hand it over.
    async fn get(&self, host: &str, path: &str, conn: &Connection) -> Answer {
        let body = Empty::<Bytes>::new().map_err(|never| -> hyper::Error { match never {} });
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(body)
            .unwrap();
        let response = self.gateway.handle(request, conn).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// A static tree: `public/` with an index and `docs/` with a page of its own.
fn site_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("public")).unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("public/index.html"), "home\n").unwrap();
    std::fs::write(dir.path().join("public/page.txt"), "public page\n").unwrap();
    std::fs::write(dir.path().join("docs/page.txt"), "docs page\n").unwrap();
    dir
}

/// Two sites over `tree`: `site.test` (apps, a root, routes; `options` added to it) and
/// `bare.test` (no apps, nothing else), after the top-level settings `top`.
fn sites(tree: &Path, top: &str, options: &str) -> String {
    format!(
        r#"
{top}
[[site]]
hosts = ["site.test", "www.site.test"]
{options}
root = "{public}"
routes = [
    {{ path = "/docs", root = "{docs}" }},
    {{ path = "/docs/api", app = "raw" }},
    {{ path = "/old", redirect = "https://blog.site.test/new", status = 301 }},
]

[[site]]
hosts = ["bare.test"]
apps = false
"#,
        public = tree.join("public").display(),
        docs = tree.join("docs").display(),
    )
}

/// Settings for sites over `tree` served over TLS: a TLS listener (top level) and the
/// site's certificate, made for `site.test` by `wharf cert dev` into `tree`.
fn tls(tree: &Path) -> (&'static str, String) {
    let files = wharf::cert::dev(&["site.test".into()], tree).unwrap();
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n";
    let site = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        files.cert.display(),
        files.key.display()
    );
    (listener, site)
}

#[tokio::test]
async fn apps_static_roots_and_the_longest_route_prefix_each_serve_their_paths() {
    let tree = site_tree();
    let fixture = gateway(&sites(tree.path(), "", ""), None).await;
    let plain = connection(None);
    let get = async |path| fixture.get("site.test", path, &plain).await;

    // An app of the apps directory, on the route its file name gives it.
    let hello = get("/hello").await;
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    // The site's static root below every route.
    let home = get("/").await;
    assert_eq!((home.status, home.body.as_str()), (200, "home\n"));
    let page = get("/page.txt").await;
    assert_eq!((page.status, page.body.as_str()), (200, "public page\n"));
    // A route's own root, over the site's root for the same file name.
    let docs = get("/docs/page.txt").await;
    assert_eq!((docs.status, docs.body.as_str()), (200, "docs page\n"));
    // The longer of two matching route prefixes wins, whatever the order in the file.
    let api = get("/docs/api/books").await;
    assert_eq!(
        (api.status, api.body.as_str()),
        (200, "raw guest saw GET /docs/api/books")
    );
    // A prefix matches whole segments only: /docsx is no part of /docs.
    assert_eq!(get("/docsx").await.status, 404);
    // Every answer carries its request id, routed or not.
    assert_eq!(hello.header("x-request-id").map(str::len), Some(16));
}

#[tokio::test]
async fn a_path_nothing_serves_is_404_and_a_site_without_apps_does_not_serve_them() {
    let tree = site_tree();
    let fixture = gateway(&sites(tree.path(), "", ""), None).await;
    let plain = connection(None);
    assert_eq!(fixture.get("bare.test", "/", &plain).await.status, 404);
    assert_eq!(fixture.get("bare.test", "/hello", &plain).await.status, 404);
    assert_eq!(fixture.get("site.test", "/hello", &plain).await.status, 200);
}

#[tokio::test]
async fn other_hosts_of_a_site_are_sent_to_its_canonical_host_with_path_and_query() {
    let tree = site_tree();
    let config = sites(tree.path(), "", "canonical_host = \"www.site.test\"");
    let fixture = gateway(&config, None).await;
    let plain = connection(None);
    let moved = fixture.get("site.test", "/page.txt?x=1", &plain).await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some("http://www.site.test/page.txt?x=1")
    );
    let served = fixture.get("www.site.test", "/page.txt", &plain).await;
    assert_eq!(served.status, 200);
    // Under TLS the redirect stays on HTTPS.
    let tls = connection(Some("site.test"));
    let moved = fixture.get("site.test", "/", &tls).await;
    assert_eq!(moved.header("location"), Some("https://www.site.test/"));
}

#[tokio::test]
async fn plain_http_is_sent_to_https_on_the_tls_port_when_the_site_asks() {
    let tree = site_tree();
    let (listener, certificate) = tls(tree.path());
    let options = format!("{certificate}\nhttps_redirect = true");
    let config = sites(tree.path(), listener, &options);
    let fixture = gateway(&config, Some(8443)).await;
    let moved = fixture
        .get("site.test", "/page.txt?a=b", &connection(None))
        .await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some("https://site.test:8443/page.txt?a=b")
    );
    let served = fixture
        .get("site.test", "/page.txt", &connection(Some("site.test")))
        .await;
    assert_eq!(
        (served.status, served.body.as_str()),
        (200, "public page\n")
    );
}

#[tokio::test]
async fn a_redirect_route_answers_its_own_status_and_appends_the_rest_of_the_path() {
    let tree = site_tree();
    let fixture = gateway(&sites(tree.path(), "", ""), None).await;
    let plain = connection(None);
    let exact = fixture.get("site.test", "/old", &plain).await;
    assert_eq!(exact.status, 301);
    assert_eq!(exact.header("location"), Some("https://blog.site.test/new"));
    let below = fixture.get("site.test", "/old/2024/post", &plain).await;
    assert_eq!(below.status, 301);
    assert_eq!(
        below.header("location"),
        Some("https://blog.site.test/new/2024/post")
    );
}

#[tokio::test]
async fn hsts_is_sent_over_tls_only() {
    let tree = site_tree();
    let (listener, certificate) = tls(tree.path());
    let options = format!("{certificate}\nhsts_max_age = 600\ncanonical_host = \"site.test\"");
    let config = sites(tree.path(), listener, &options);
    let fixture = gateway(&config, None).await;
    let secure = fixture
        .get("site.test", "/page.txt", &connection(Some("site.test")))
        .await;
    assert_eq!(secure.status, 200);
    assert_eq!(
        secure.header("strict-transport-security"),
        Some("max-age=600")
    );
    let plain = fixture
        .get("site.test", "/page.txt", &connection(None))
        .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("strict-transport-security"), None);
    // Answers wharf makes itself are the site's too: the redirect to the canonical host.
    let redirected = fixture
        .get(
            "www.site.test",
            "/page.txt",
            &connection(Some("www.site.test")),
        )
        .await;
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.header("strict-transport-security"),
        Some("max-age=600")
    );
    // A refusal is the site's answer too.
    let options = format!("{certificate}\nhsts_max_age = 600\ndeny = [\"127.0.0.0/8\"]");
    let fixture = gateway(&sites(tree.path(), listener, &options), None).await;
    let refused = fixture
        .get("site.test", "/page.txt", &connection(Some("site.test")))
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("strict-transport-security"),
        Some("max-age=600")
    );
}

#[tokio::test]
async fn site_headers_are_added_to_answers_that_lack_them() {
    let tree = site_tree();
    let options =
        "headers = { X-Content-Type-Options = \"nosniff\", Content-Type = \"text/x-site\" }";
    let fixture = gateway(&sites(tree.path(), "", options), None).await;
    let plain = connection(None);
    let file = fixture.get("site.test", "/page.txt", &plain).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.header("x-content-type-options"), Some("nosniff"));
    // The answer's own field wins over the site's.
    assert_eq!(file.header("content-type"), Some("text/plain"));
    let missing = fixture.get("site.test", "/no-such-page", &plain).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-content-type-options"), Some("nosniff"));
    let other = fixture.get("bare.test", "/", &plain).await;
    assert_eq!(other.header("x-content-type-options"), None);
}

#[tokio::test]
async fn an_unknown_host_is_421_or_404_as_configured() {
    let tree = site_tree();
    let plain = connection(None);
    let misdirected = gateway(&sites(tree.path(), "unknown_host = \"421\"", ""), None).await;
    assert_eq!(
        misdirected.get("elsewhere.test", "/", &plain).await.status,
        421
    );
    assert_eq!(misdirected.get("site.test", "/", &plain).await.status, 200);
    let not_found = gateway(&sites(tree.path(), "unknown_host = \"404\"", ""), None).await;
    assert_eq!(
        not_found.get("elsewhere.test", "/", &plain).await.status,
        404
    );
    assert_eq!(not_found.get("site.test", "/", &plain).await.status, 200);
}

#[tokio::test]
async fn a_tls_connection_for_one_site_does_not_serve_another_sites_requests() {
    let tree = site_tree();
    let fixture = gateway(&sites(tree.path(), "", ""), None).await;
    let for_bare = connection(Some("bare.test"));
    assert_eq!(fixture.get("site.test", "/", &for_bare).await.status, 421);
    assert_eq!(fixture.get("bare.test", "/", &for_bare).await.status, 404);
}

#[tokio::test]
async fn an_http01_answer_comes_before_redirects_and_rules_and_a_wrong_token_does_not() {
    let storage = tempfile::tempdir().unwrap();
    let answers = storage.path().join("challenges/http-01");
    std::fs::create_dir_all(&answers).unwrap();
    std::fs::write(answers.join("tok-1"), "tok-1.thumbprint").unwrap();
    // The site lets no client in and sends plain HTTP to HTTPS: neither stops the CA.
    let config = format!(
        r#"
[[listener]]
address = "0.0.0.0:80"
[[listener]]
address = "0.0.0.0:443"
tls = true

[acme]
storage = "{}"

[[site]]
hosts = ["www.example.com"]
tls = "acme"
https_redirect = true
deny = ["0.0.0.0/0"]
"#,
        storage.path().display()
    );
    let fixture = gateway(&config, Some(443)).await;
    let plain = connection(None);
    let host = "www.example.com";
    let answer = fixture
        .get(host, "/.well-known/acme-challenge/tok-1", &plain)
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "tok-1.thumbprint")
    );
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
    // A token with no answer, or one no CA sends, is an ordinary request: the rules
    // stop it before the 404 it would get.
    for path in [
        "/.well-known/acme-challenge/tok-2",
        "/.well-known/acme-challenge/a.b",
    ] {
        assert_eq!(fixture.get(host, path, &plain).await.status, 403, "{path}");
    }
    // Over TLS the path is nothing special.
    let tls = connection(Some(host));
    let over_tls = fixture
        .get(host, "/.well-known/acme-challenge/tok-1", &tls)
        .await;
    assert_eq!(over_tls.status, 403);
}
