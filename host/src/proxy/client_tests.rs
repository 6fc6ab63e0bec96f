//! The client against real backends: hyper servers on 127.0.0.1, plain, h2c and TLS.

use super::*;
use crate::gateway::{Connection, ListenerId, RequestId};
use crate::proxy::{headers, tunnel};
use http_body_util::Full;
use hyper::service::service_fn;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::PrivatePkcs8KeyDer;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// A backend on 127.0.0.1: counts accepted connections, remembers the SNI of each
/// TLS handshake, and can drop its open connections.
struct TestBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    snis: Arc<Mutex<Vec<Option<String>>>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TestBackend {
    async fn start(http2: bool, tls: Option<Arc<ServerConfig>>, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = TestBackend {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            snis: Arc::default(),
            connections: Arc::default(),
        };
        let (accepted, snis, connections) = (
            backend.accepted.clone(),
            backend.snis.clone(),
            backend.connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (handler, tls, snis) = (handler.clone(), tls.clone(), snis.clone());
                let task = tokio::spawn(async move {
                    let Some(tls) = tls else {
                        return serve(TokioIo::new(tcp), http2, handler).await;
                    };
                    let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else {
                        return;
                    };
                    let sni = stream.get_ref().1.server_name().map(String::from);
                    snis.lock().unwrap().push(sni);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve(TokioIo::new(stream), h2, handler).await
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        backend
    }

    async fn plain(handler: Handler) -> Self {
        Self::start(false, None, handler).await
    }

    fn address(&self) -> BackendAddress {
        BackendAddress {
            tls: false,
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection the backend has open, as a backend's keep-alive
    /// timeout would.
    fn close_connections(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn serve<I>(io: I, http2: bool, handler: Handler)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let _ = match http2 {
        true => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
        false => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
    };
}

fn boxed(e: hyper::Error) -> BoxError {
    e.into()
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(Into::into).boxed_unsync()
}

fn ok(text: &'static str) -> Handler {
    handler(move |_| async move { Response::new(full(text)) })
}

/// Answers with the request body as it arrives.
fn echo() -> Handler {
    handler(|req: Request<Incoming>| async move {
        Response::new(req.into_body().map_err(boxed).boxed_unsync())
    })
}

fn settings() -> ClientSettings {
    ClientSettings {
        http2: false,
        tls: None,
        max_connections: 16,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(HOST, "backend.test")
        .body(full(""))
        .unwrap()
}

async fn text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A body whose frames the test sends one by one.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(1);
    (tx, ChannelBody(rx).boxed_unsync())
}

/// Polls `check` until it holds, for at most five seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn expect_connect(result: Result<Response<Body>, SendError>) -> (Request<Body>, String) {
    match result {
        Err(SendError::Connect { request, error }) => (*request, error),
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(response) => panic!("expected a connect error, got {}", response.status()),
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_kept_alive_connection() {
    let backend = TestBackend::plain(ok("hello")).await;
    let client = Client::new(&backend.address(), settings());
    for _ in 0..10 {
        let response = client.send(get("/")).await.unwrap();
        assert_eq!(text(response).await, "hello");
    }
    assert_eq!(backend.accepted(), 1);
    assert_eq!(client.open_connections(), 1);
}

#[tokio::test]
async fn an_idle_connection_older_than_the_idle_timeout_is_not_reused() {
    let backend = TestBackend::plain(ok("hello")).await;
    let idle = Duration::from_millis(100);
    let client = Client::new(
        &backend.address(),
        ClientSettings {
            idle_timeout: idle,
            ..settings()
        },
    );
    text(client.send(get("/")).await.unwrap()).await;
    // What is tested is time passing: a sleep, not a readiness check.
    tokio::time::sleep(idle * 2).await;
    text(client.send(get("/")).await.unwrap()).await;
    assert_eq!(backend.accepted(), 2);
    eventually("the expired connection closed", || {
        client.open_connections() == 1
    })
    .await;
}

#[tokio::test]
async fn answers_without_a_body_leave_the_connection_reusable() {
    let backend = TestBackend::plain(handler(|_| async {
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }))
    .await;
    let client = Client::new(&backend.address(), settings());
    for _ in 0..3 {
        // Dropped unread, as a server drops a body it knows is empty.
        let response = client.send(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_used_again() {
    let backend = TestBackend::plain(ok("hello")).await;
    let client = Client::new(&backend.address(), settings());
    text(client.send(get("/")).await.unwrap()).await;
    backend.close_connections();
    eventually("the client saw the close", || {
        client.open_connections() == 0
    })
    .await;

    let response = client.send(get("/")).await.unwrap();
    assert_eq!(text(response).await, "hello");
    assert_eq!(backend.accepted(), 2);
}

/// Reads one request head from `tcp` and answers `ok`; false at the end of the stream.
fn answer_one(tcp: &mut std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .is_ok()
}

#[tokio::test]
async fn a_backend_close_the_client_has_not_processed_yet_does_not_lose_the_next_request() {
    // A backend on a thread of its own, so it closes its first connection while the
    // client's runtime is not running: the close is there to be seen, but the
    // connection's task has not looked yet when the next request arrives.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (close, close_rx) = std::sync::mpsc::channel::<()>();
    let (closed_tx, closed) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        assert!(answer_one(&mut first));
        close_rx.recv().unwrap();
        drop(first);
        closed_tx.send(()).unwrap();
        let (mut second, _) = listener.accept().unwrap();
        while answer_one(&mut second) {}
    });
    let address = BackendAddress {
        tls: false,
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let client = Client::new(&address, settings());
    assert_eq!(text(client.send(get("/")).await.unwrap()).await, "ok");

    close.send(()).unwrap();
    closed.recv().unwrap();
    let response = client.send(get("/")).await.unwrap();
    assert_eq!(text(response).await, "ok");
    drop(client);
    // Joined off the runtime, which must run on to close the client's connection.
    let joined = tokio::task::spawn_blocking(move || server.join().unwrap());
    tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn past_max_connections_a_request_waits_and_is_turned_away_busy_after_the_connect_timeout() {
    let (open_gate, gate) = watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = arrived.clone();
    let backend = TestBackend::plain(handler(move |_| {
        let (mut gate, seen) = (gate.clone(), seen.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            gate.wait_for(|open| *open).await.unwrap();
            Response::new(full("done"))
        }
    }))
    .await;
    let connect_timeout = Duration::from_millis(300);
    let client = Arc::new(Client::new(
        &backend.address(),
        ClientSettings {
            max_connections: 2,
            connect_timeout,
            ..settings()
        },
    ));
    let send = |client: &Arc<Client>| {
        let client = client.clone();
        tokio::spawn(async move { text(client.send(get("/")).await.unwrap()).await })
    };
    let first = [send(&client), send(&client)];
    eventually("two requests reached the backend", || {
        arrived.load(Ordering::SeqCst) == 2
    })
    .await;

    let started = Instant::now();
    let error = match client.send(get("/third")).await {
        Err(SendError::Busy { error, .. }) => error,
        other => panic!("expected busy, got {:?}", other.map(|r| r.status())),
    };
    assert!(started.elapsed() >= connect_timeout);
    assert!(error.contains("all 2 connections busy"), "{error}");

    // A request waiting for a slot gets the first one freed, and its connection.
    let waiting = send(&client);
    open_gate.send(true).unwrap();
    for request in first {
        assert_eq!(request.await.unwrap(), "done");
    }
    assert_eq!(waiting.await.unwrap(), "done");
    assert_eq!(backend.accepted(), 2);
}

#[tokio::test]
async fn a_refused_connection_gives_the_request_back_untouched() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let address = BackendAddress {
        tls: false,
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let client = Client::new(&address, settings());
    let request = Request::post("/upload?x=1")
        .version(Version::HTTP_2)
        .header("x-test", "kept")
        .body(full("payload"))
        .unwrap();
    let (request, error) = expect_connect(client.send(request).await);
    assert!(error.contains(&addr.to_string()), "{error}");
    assert_eq!(request.uri(), "/upload?x=1");
    assert_eq!(request.version(), Version::HTTP_2);
    assert_eq!(request.headers()["x-test"], "kept");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "payload");
    assert_eq!(client.open_connections(), 0);
}

#[tokio::test]
async fn no_response_head_within_the_response_timeout_is_a_timeout() {
    let backend = TestBackend::plain(handler(|_| std::future::pending())).await;
    let client = Client::new(
        &backend.address(),
        ClientSettings {
            response_timeout: Duration::from_millis(200),
            ..settings()
        },
    );
    assert!(matches!(
        client.send(get("/")).await,
        Err(SendError::Timeout)
    ));
    // The connection that timed out is closed, not kept.
    eventually("the connection closed", || client.open_connections() == 0).await;
}

#[tokio::test]
async fn an_upload_longer_than_the_response_timeout_is_not_a_timeout() {
    // Answers once the whole body is in, as most backends do.
    let backend = TestBackend::plain(handler(|req: Request<Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("{} bytes", body.len())))
    }))
    .await;
    let client = Client::new(
        &backend.address(),
        ClientSettings {
            response_timeout: Duration::from_millis(300),
            ..settings()
        },
    );
    let (tx, body) = channel_body();
    // Six pieces 100 ms apart: twice the response timeout in all, never a pause of it.
    tokio::spawn(async move {
        for _ in 0..6 {
            tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let request = Request::post("/")
        .header(HOST, "backend.test")
        .body(body)
        .unwrap();
    let response = client.send(request).await.expect("an answer");
    assert_eq!(text(response).await, "60 bytes");
}

#[tokio::test]
async fn a_connection_whose_upload_is_still_going_is_not_given_to_the_next_request() {
    // A backend that refuses an upload at once and keeps the connection open without
    // reading the rest (as one enforcing a size limit may), and answers ok on the next.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut first, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            std::io::Read::read_exact(&mut first, &mut byte).unwrap();
            head.push(byte[0]);
        }
        first
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large")
            .unwrap();
        let (mut second, _) = listener.accept().unwrap();
        while answer_one(&mut second) {}
        drop(first);
    });
    let address = BackendAddress {
        tls: false,
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let client = Client::new(&address, settings());
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"the first of many pieces"))
        .await
        .unwrap();
    let upload = Request::post("/")
        .header(HOST, "backend.test")
        .body(body)
        .unwrap();
    let refused = client.send(upload).await.expect("an early answer");
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text(refused).await, "too large");
    // The upload has not ended (its sender is alive): that connection is still busy.
    let next = client.send(get("/")).await.expect("another connection");
    assert_eq!(text(next).await, "ok");
    drop(tx);
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_a_bad_response() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0; 1024];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    });
    let address = BackendAddress {
        tls: false,
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let sent = Client::new(&address, settings()).send(get("/")).await;
    assert!(
        matches!(
            sent,
            Err(SendError::Failed {
                bad_response: true,
                ..
            })
        ),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_response_body_that_pauses_past_the_idle_timeout_ends_with_an_error() {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let kept = senders.clone();
    let backend = TestBackend::plain(handler(move |_| {
        let kept = kept.clone();
        async move {
            let (tx, body) = channel_body();
            tx.try_send(Bytes::from_static(b"first")).unwrap();
            // Kept, so the body neither ends nor sends more.
            kept.lock().unwrap().push(tx);
            Response::new(body)
        }
    }))
    .await;
    let client = Client::new(
        &backend.address(),
        ClientSettings {
            idle_timeout: Duration::from_millis(200),
            ..settings()
        },
    );
    let mut body = client.send(get("/")).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    let error = body.frame().await.unwrap().unwrap_err();
    assert!(error.to_string().contains("nothing for 200 ms"), "{error}");
    drop(body);
    eventually("the connection closed", || client.open_connections() == 0).await;
}

#[tokio::test]
async fn a_request_body_that_pauses_past_the_idle_timeout_ends_the_request() {
    let (outcome_tx, outcome) = mpsc::channel(1);
    let backend = TestBackend::plain(handler(move |req: Request<Incoming>| {
        let outcome_tx = outcome_tx.clone();
        async move {
            let read = req.into_body().collect().await.map(|_| ());
            outcome_tx.send(read.is_err()).await.unwrap();
            Response::new(full(""))
        }
    }))
    .await;
    let client = Client::new(
        &backend.address(),
        ClientSettings {
            idle_timeout: Duration::from_millis(200),
            ..settings()
        },
    );
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let request = Request::post("/")
        .header(HOST, "backend.test")
        .body(body)
        .unwrap();
    let sent = client.send(request).await;
    assert!(
        matches!(
            sent,
            Err(SendError::Failed {
                bad_response: false,
                ..
            })
        ),
        "{sent:?}"
    );
    let mut outcome = outcome;
    assert_eq!(
        outcome.recv().await,
        Some(true),
        "the backend saw the body break off"
    );
    drop(tx);
}

const CHUNK: usize = 64 * 1024;

/// Sends `chunks` chunks of [`CHUNK`] bytes (chunk i all `i as u8`), counting.
fn upload(chunks: usize) -> (Body, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let (tx, body) = channel_body();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let producer = tokio::spawn(async move {
        for i in 0..chunks {
            if tx.send(Bytes::from(vec![i as u8; CHUNK])).await.is_err() {
                return;
            }
            counter.fetch_add(CHUNK, Ordering::SeqCst);
        }
    });
    (body, sent, producer)
}

#[tokio::test]
async fn a_4_mib_body_streams_through_both_ways_without_being_collected() {
    let backend = TestBackend::plain(echo()).await;
    let client = Client::new(&backend.address(), settings());
    let chunks = 64;
    let (body, sent, _producer) = upload(chunks);
    let request = Request::post("/")
        .header(HOST, "backend.test")
        .body(body)
        .unwrap();
    let mut body = client.send(request).await.unwrap().into_body();

    let mut received = Vec::new();
    let mut sent_at_first_byte = None;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        sent_at_first_byte.get_or_insert(sent.load(Ordering::SeqCst));
        received.extend_from_slice(&data);
    }
    assert_eq!(received.len(), chunks * CHUNK);
    for (i, chunk) in received.chunks(CHUNK).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == i as u8),
            "chunk {i} arrived intact"
        );
    }
    // The answer started while the upload was still going: nothing waited for all of it.
    let early = sent_at_first_byte.unwrap();
    assert!(
        early < chunks * CHUNK,
        "{early} bytes were sent before the first came back"
    );
}

#[tokio::test]
async fn a_reader_that_stops_reading_holds_the_upload_back() {
    let backend = TestBackend::plain(echo()).await;
    let client = Client::new(&backend.address(), settings());
    // Far more than the socket buffers on the way can hold.
    let chunks = 1024;
    let (body, sent, producer) = upload(chunks);
    let request = Request::post("/")
        .header(HOST, "backend.test")
        .body(body)
        .unwrap();
    let response = client.send(request).await.unwrap();

    let producer = tokio::time::timeout(Duration::from_secs(1), producer).await;
    assert!(
        producer.is_err(),
        "the whole upload went while nobody read the answer"
    );
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent < chunks * CHUNK / 2,
        "{sent} bytes were taken without a reader"
    );
    // Dropping the unread answer closes the connection and frees its slot.
    drop(response);
    eventually("the connection closed", || client.open_connections() == 0).await;
}

#[tokio::test]
async fn an_h2c_backend_gets_concurrent_requests_on_one_connection() {
    let backend = TestBackend::start(
        true,
        None,
        handler(|req: Request<Incoming>| async move {
            let seen = format!("{:?} {}", req.version(), req.uri());
            Response::new(full(seen))
        }),
    )
    .await;
    let client = Arc::new(Client::new(
        &backend.address(),
        ClientSettings {
            http2: true,
            ..settings()
        },
    ));
    let requests: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(
                async move { text(client.send(get(&format!("/r{i}"))).await.unwrap()).await },
            )
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(
            request.await.unwrap(),
            format!("HTTP/2.0 http://backend.test/r{i}")
        );
    }
    assert_eq!(backend.accepted(), 1);
    assert_eq!(client.open_connections(), 1);
}

struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn test_ca() -> TestCa {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    TestCa {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A TLS server configuration with a certificate from `ca` for `names`.
fn server_tls(ca: &TestCa, names: &[&str]) -> Arc<ServerConfig> {
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let key = PrivatePkcs8KeyDer::from(key.serialize_der());
    let mut config = ServerConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn write_ca(dir: &tempfile::TempDir, ca: &TestCa) -> std::path::PathBuf {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &ca.pem).unwrap();
    path
}

#[tokio::test]
async fn a_tls_backend_is_verified_against_the_ca_file_and_gets_sni_for_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca();
    let tls = server_tls(&ca, &["localhost", "127.0.0.1"]);
    let backend = TestBackend::start(false, Some(tls), ok("secure")).await;
    let ca_file = write_ca(&dir, &ca);
    let settings = ClientSettings {
        tls: Some(tls_config(Some(&ca_file), false).unwrap()),
        ..settings()
    };
    let by_name = BackendAddress {
        tls: true,
        host: "localhost".into(),
        port: backend.addr.port(),
    };
    let by_ip = BackendAddress {
        host: "127.0.0.1".into(),
        ..by_name.clone()
    };
    for address in [by_name, by_ip] {
        let client = Client::new(&address, settings.clone());
        let response = client.send(get("/")).await.unwrap();
        assert_eq!(text(response).await, "secure", "{address}");
    }
    // A name is sent as SNI; an IP address is not (the certificate is checked for it).
    let snis = backend.snis.lock().unwrap().clone();
    assert_eq!(snis, [Some("localhost".to_string()), None]);
}

#[tokio::test]
async fn an_https_backend_speaks_http2_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca();
    let backend = TestBackend::start(
        false,
        Some(server_tls(&ca, &["localhost"])),
        handler(|req: Request<Incoming>| async move {
            Response::new(full(format!("{:?} {}", req.version(), req.uri())))
        }),
    )
    .await;
    let address = BackendAddress {
        tls: true,
        host: "localhost".into(),
        port: backend.addr.port(),
    };
    let client = Client::new(
        &address,
        ClientSettings {
            http2: true,
            tls: Some(tls_config(Some(&write_ca(&dir, &ca)), true).unwrap()),
            ..settings()
        },
    );
    let response = client.send(get("/x")).await.unwrap();
    assert_eq!(text(response).await, "HTTP/2.0 https://backend.test/x");
}

#[tokio::test]
async fn a_backend_certificate_from_another_ca_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        TestBackend::start(false, Some(server_tls(&test_ca(), &["localhost"])), ok("")).await;
    let trusted = write_ca(&dir, &test_ca());
    let address = BackendAddress {
        tls: true,
        host: "localhost".into(),
        port: backend.addr.port(),
    };
    let client = Client::new(
        &address,
        ClientSettings {
            tls: Some(tls_config(Some(&trusted), false).unwrap()),
            ..settings()
        },
    );
    let (_, error) = expect_connect(client.send(get("/")).await);
    assert!(error.contains("TLS: invalid peer certificate"), "{error}");
}

#[test]
fn tls_config_names_a_ca_file_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let error = format!("{:#}", tls_config(Some(&missing), false).unwrap_err());
    assert!(error.contains("missing.pem"), "{error}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let error = format!("{:#}", tls_config(Some(&empty), false).unwrap_err());
    assert!(error.contains("empty.pem: no certificate"), "{error}");
}

#[tokio::test]
async fn a_probe_gets_the_status_over_a_fresh_connection() {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    let backend = TestBackend::plain(handler(move |req: Request<Incoming>| {
        seen.lock().unwrap().push(req.uri().to_string());
        async {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }))
    .await;
    let client = Client::new(&backend.address(), settings());
    let timeout = Duration::from_secs(2);
    let status = client.probe(None, "/health?deep=1", timeout).await;
    assert_eq!(status, Ok(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(*paths.lock().unwrap(), ["/health?deep=1"]);
    eventually("the probe's connection closed", || {
        client.open_connections() == 0
    })
    .await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(client.probe(Some(port), "/health", timeout).await.is_err());
}

#[tokio::test]
async fn an_upgraded_connection_is_tunnelled_both_ways_and_closed_when_idle() {
    // The backend switches protocols, then answers each read with "echo:" and the bytes.
    let backend = TestBackend::plain(handler(|mut req: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0; 64];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                let reply = [b"echo:", &buf[..n]].concat();
                io.write_all(&reply).await.unwrap();
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "test")
            .body(full(""))
            .unwrap()
    }))
    .await;
    let client = Arc::new(Client::new(&backend.address(), settings()));
    let (guard, tunnel_closed) = oneshot::channel::<()>();
    let guard = Arc::new(Mutex::new(Some(guard)));
    let idle = Duration::from_millis(300);

    // The balancer's side: the request on to the backend, the 101 back, the tunnel.
    let front = TestBackend::plain(handler(move |mut req: Request<Incoming>| {
        let (client, guard) = (client.clone(), guard.lock().unwrap().take().unwrap());
        async move {
            let client_side = hyper::upgrade::on(&mut req);
            let conn = Connection {
                peer: "127.0.0.1:1".parse().unwrap(),
                client: "127.0.0.1:1".parse().unwrap(),
                local: "127.0.0.1:2".parse().unwrap(),
                listener: ListenerId(0),
                tls: false,
                sni: None,
            };
            assert!(headers::is_upgrade(&req));
            headers::to_backend(&mut req, &conn, RequestId::for_test(1), &[]);
            let request = req.map(|body| body.map_err(boxed).boxed_unsync());
            let mut response = client.send(request).await.unwrap();
            headers::from_backend(&mut response);
            let backend_side = hyper::upgrade::on(&mut response);
            tunnel::spawn(client_side, backend_side, idle, guard);
            response
        }
    }))
    .await;

    let mut tcp = tokio::net::TcpStream::connect(front.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tcp.read_u8().await.unwrap();
        head.push(byte);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    tcp.write_all(b"ping").await.unwrap();
    let mut reply = [0; 9];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"echo:ping");

    // Nothing moves: the tunnel closes both sides and lets go of its guard.
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert_eq!(read.unwrap().unwrap(), 0);
    assert!(started.elapsed() >= idle - Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(5), tunnel_closed)
        .await
        .unwrap()
        .unwrap_err();
}
