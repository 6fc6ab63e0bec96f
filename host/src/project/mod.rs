//! Guest projects on the developer's side: `wharf new` makes one from a template,
//! `wharf build` turns one into an app in the apps directory, `wharf dev` rebuilds
//! and reloads it on every save.

pub mod build;
pub mod dev;
pub mod new;
pub mod sdk;

pub use build::{Built, Profile, build};
pub use new::{Template, new_project};
