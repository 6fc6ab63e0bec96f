//! The set of loaded apps and the route table built from it. Replaced whole on every
//! change and read through `ArcSwap`, so a request sees one consistent snapshot.

use super::app::App;
use crate::http::route_matches;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Default, Clone)]
pub struct Registry {
    apps: BTreeMap<String, Arc<App>>,
    /// (prefix, app), longest prefix first.
    routes: Vec<(String, Arc<App>)>,
}

impl Registry {
    pub fn apps(&self) -> impl Iterator<Item = &Arc<App>> {
        self.apps.values()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<App>> {
        self.apps.get(name)
    }

    /// The app whose route is the longest prefix of `path`.
    pub fn route(&self, path: &str) -> Option<&Arc<App>> {
        self.route_with_prefix(path).map(|(_, app)| app)
    }

    /// Like `route`, with the prefix that matched.
    pub fn route_with_prefix(&self, path: &str) -> Option<(&str, &Arc<App>)> {
        self.routes
            .iter()
            .find(|(prefix, _)| route_matches(prefix, path))
            .map(|(prefix, app)| (prefix.as_str(), app))
    }

    /// A registry with `app` added or replaced. Fails, leaving `self` as it was, if one
    /// of its routes is already served by another app.
    pub fn with(&self, app: Arc<App>) -> anyhow::Result<Self> {
        for route in &app.routes {
            let norm = normalize(route);
            if let Some((_, other)) = self
                .routes
                .iter()
                .find(|(r, other)| normalize(r) == norm && other.name != app.name)
            {
                anyhow::bail!(
                    "{}: route {route} is already served by {}",
                    app.file.display(),
                    other.file.display()
                );
            }
        }
        let mut next = self.clone();
        next.apps.insert(app.name.to_string(), app);
        next.rebuild_routes();
        Ok(next)
    }

    pub fn without(&self, name: &str) -> Self {
        let mut next = self.clone();
        next.apps.remove(name);
        next.rebuild_routes();
        next
    }

    fn rebuild_routes(&mut self) {
        self.routes = self
            .apps
            .values()
            .flat_map(|app| app.routes.iter().map(|r| (r.clone(), app.clone())))
            .collect();
        self.routes
            .sort_by(|(a, _), (b, _)| normalize(b).len().cmp(&normalize(a).len()).then(a.cmp(b)));
    }
}

fn normalize(route: &str) -> &str {
    match route.strip_suffix('/') {
        Some("") | None => route,
        Some(r) => r,
    }
}
