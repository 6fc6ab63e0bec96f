//! `wharf dev`'s failed builds, for the gateway to show to browsers in place of the app.

use crate::http::route_matches;
use crate::runtime::Registry;
use std::collections::HashMap;
use std::sync::Mutex;

/// The last failed build of each app whose newest sources do not compile.
#[derive(Default)]
pub struct BuildErrors(Mutex<HashMap<String, String>>);

impl BuildErrors {
    /// The failure to show for a request to `path`, if the app a request for `path` is
    /// routed to last failed to build: (app, compiler output). The path is routed as
    /// requests are, by the routes in `registry` (the last good version of each app,
    /// its manifest's routes included), and an app that never built by its default
    /// route, `/NAME`, where that is the longer match.
    pub fn for_path(&self, path: &str, registry: &Registry) -> Option<(String, String)> {
        let errors = self.0.lock().unwrap();
        if errors.is_empty() {
            return None;
        }
        let length = |prefix: &str| prefix.trim_end_matches('/').len();
        let loaded = registry
            .route_with_prefix(path)
            .map(|(prefix, app)| (length(prefix), &*app.name));
        let unbuilt = errors
            .keys()
            .filter(|name| registry.get(name).is_none())
            .map(|name| (format!("/{name}"), name.as_str()))
            .filter(|(route, _)| route_matches(route, path))
            .map(|(route, name)| (length(&route), name))
            .max();
        // On a tie the loaded app is the one requests reach.
        let app = match (loaded, unbuilt) {
            (Some((at, loaded)), Some((unbuilt_at, unbuilt))) => match unbuilt_at > at {
                true => unbuilt,
                false => loaded,
            },
            (loaded, unbuilt) => loaded.or(unbuilt)?.1,
        };
        errors
            .get(app)
            .map(|output| (app.to_string(), output.clone()))
    }

    /// Records the outcome of `app`'s latest build: its compiler output when it failed,
    /// `None` when it built.
    pub fn set(&self, app: &str, output: Option<String>) {
        let mut errors = self.0.lock().unwrap();
        match output {
            Some(output) => errors.insert(app.to_string(), output),
            None => errors.remove(app),
        };
    }
}
