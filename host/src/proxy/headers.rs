//! What crosses the balancer with a request and its answer. (Skeleton: the client
//! helper fills it in.)

use crate::gateway::{Connection, RequestId};
use http::{Request, Response};
use ipnet::IpNet;

/// Makes `req` the request a backend gets: hop-by-hop headers removed (those named in
/// `Connection` too; `Upgrade` kept on an upgrade request), `X-Forwarded-For`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` set from the real peer
/// (values a client sent replaced, unless its address is in `trusted`, then appended
/// to), the request id in `x-request-id`, the URI in origin form.
pub fn to_backend<B>(req: &mut Request<B>, conn: &Connection, id: RequestId, trusted: &[IpNet]) {
    let _ = (req, conn, id, trusted);
    todo!()
}

/// Hop-by-hop headers removed from a backend's answer (kept on a 101).
pub fn from_backend<B>(resp: &mut Response<B>) {
    let _ = resp;
    todo!()
}

/// The request asks to switch protocols (WebSocket and other `Upgrade`s, over HTTP/1.1).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let _ = req;
    todo!()
}
