//! Upgraded connections (WebSocket and the like) passed through both ways, with their
//! own idle timeout. (Skeleton: the client helper fills it in.)

use hyper::upgrade::OnUpgrade;
use std::time::Duration;

/// Once both sides have switched protocols, copies bytes both ways until either side
/// closes or nothing moves for `idle`; `guard` (the request's in-flight count) is
/// dropped when the tunnel closes, so a draining backend waits for its tunnels.
pub fn spawn(client: OnUpgrade, backend: OnUpgrade, idle: Duration, guard: impl Send + 'static) {
    let _ = (client, backend, idle);
    drop(guard);
    todo!()
}
