//! `wharf new NAME`: a guest crate that builds as is, wherever it is created.

use anyhow::{Context, bail, ensure};
use std::path::Path;

/// What a new project starts from: the guest apps shipped with wharf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// One handler answering "Hello from wharf!".
    Hello,
    /// A JSON API: a router with path parameters, JSON in and out.
    Api,
    /// A todo list kept in the app's database (SQLite by default).
    Todo,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Template::Hello => "hello",
            Template::Api => "api",
            Template::Todo => "todo",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Template::Hello => include_str!("../../../guest-apps/hello/src/lib.rs"),
            Template::Api => include_str!("../../../guest-apps/api/src/lib.rs"),
            Template::Todo => include_str!("../../../guest-apps/todo/src/lib.rs"),
        }
    }

    /// The path prefix the template's routes are written for.
    fn prefix(self) -> Option<&'static str> {
        match self {
            Template::Hello => None,
            Template::Api => Some("/api"),
            Template::Todo => Some("/todo"),
        }
    }

    fn manifest(self) -> Option<&'static str> {
        match self {
            Template::Todo => Some(include_str!("../../../guest-apps/todo/todo.toml")),
            _ => None,
        }
    }

    fn dependencies(self) -> &'static str {
        match self {
            Template::Hello => "",
            Template::Api | Template::Todo => {
                "serde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n"
            }
        }
    }
}

/// Creates the project `dir` (its last component is the app's name) from `template`,
/// depending on the wharf-sdk crate at `sdk`. Returns the app's name.
pub fn new_project(dir: &Path, template: Template, sdk: &Path) -> anyhow::Result<String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not end in a name", dir.display()))?;
    check_name(name)?;
    ensure!(
        !dir.exists() || dir.read_dir()?.next().is_none(),
        "{} already exists and is not empty",
        dir.display()
    );
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("wharf-sdk at {}", sdk.display()))?;
    ensure!(
        sdk.join("Cargo.toml").is_file(),
        "{} is not the wharf-sdk crate (no Cargo.toml)",
        sdk.display()
    );

    let mut source = template.source().to_string();
    if let Some(prefix) = template.prefix() {
        source = source.replace(prefix, &format!("/{name}"));
    }
    let sdk_path = toml_string(&sdk.display().to_string());
    let files: Vec<(&str, String)> = vec![
        (
            "Cargo.toml",
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 # A wharf app is a WebAssembly component: a cdylib built for wasm32-wasip2.\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\nwharf-sdk = {{ path = {sdk_path} }}\n{deps}\n\
                 # Whole-program optimisation: smaller components with fewer imports, which\n\
                 # instantiate faster on every request.\n\
                 [profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\nstrip = \"debuginfo\"\n\n\
                 # A project of its own, also when created inside another Cargo workspace.\n\
                 [workspace]\n",
                deps = template.dependencies(),
            ),
        ),
        (
            ".cargo/config.toml",
            "[build]\ntarget = \"wasm32-wasip2\"\n".into(),
        ),
        ("src/lib.rs", source),
        (".gitignore", "/target\n".into()),
        ("README.md", readme(name, template)),
    ];
    for (path, text) in files {
        write(&dir.join(path), &text)?;
    }
    if let Some(manifest) = template.manifest() {
        write(&dir.join(format!("{name}.toml")), manifest)?;
    }
    Ok(name.to_string())
}

/// App names are URL path segments and crate names: lowercase letters, digits, `-` and
/// `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{name:?} cannot name an app: use lowercase letters, digits, '-' and '_', \
             starting with a letter"
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn readme(name: &str, template: Template) -> String {
    let manifest = match template.manifest() {
        Some(_) => format!(
            "\n`{name}.toml` is the app's manifest (routes, variables, limits, database);\n\
             `wharf build` puts it beside the component.\n"
        ),
        None => String::new(),
    };
    format!(
        "# {name}\n\n\
         A wharf app, written with wharf-sdk and built to a WebAssembly component.\n\n\
         ```\n\
         wharf dev .                 # serve it at http://127.0.0.1:8080/{name}, rebuilt on every save\n\
         wharf build . --apps ../apps   # release build into an apps directory\n\
         ```\n\n\
         The code is in `src/lib.rs`. `.cargo/config.toml` makes `cargo build` target\n\
         `wasm32-wasip2` (`rustup target add wasm32-wasip2` installs it).\n{manifest}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_path_segments_and_crate_names() {
        for good in ["hello", "my-app", "app_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2app", "My", "a b", "a/b", "..", "-x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_are_renamed_and_refuse_a_non_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let sdk = super::super::sdk::write_out(data.path()).unwrap();
        let dir = tmp.path().join("books");
        assert_eq!(new_project(&dir, Template::Api, &sdk).unwrap(), "books");
        let source = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(source.contains("\"/books/books/:id\""), "{source}");
        assert!(!source.contains("/api"));
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("[workspace]") && cargo.contains("crate-type = [\"cdylib\"]"));
        let err = new_project(&dir, Template::Hello, &sdk).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");

        let todo = tmp.path().join("tasks");
        new_project(&todo, Template::Todo, &sdk).unwrap();
        assert!(todo.join("tasks.toml").is_file());
    }
}
