//! `greffon plugin scaffold NAME`: a new plugin folder that loads and runs
//! as written.

use crate::error::HostError;
use greffon_core::Home;
use std::path::{Path, PathBuf};

/// The plugin template copied when the home has none.
const TEMPLATE: &str = include_str!("../../../plugins/_template/plugin.py");

/// Python keywords cannot be module-friendly plugin names.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Copies `plugins/_template/` (or the template built into greffon when
/// the home has none) to `plugins/NAME/`, with the name filled in.
pub fn scaffold(home: &Home, name: &str) -> Result<PathBuf, HostError> {
    let refuse = |reason: String| HostError::Scaffold {
        name: name.to_string(),
        reason,
    };
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(refuse(
            "a plugin name is a lowercase identifier: a letter, then letters, digits or '_' (at most 64)".into(),
        ));
    }
    if KEYWORDS.contains(&name) {
        return Err(refuse(format!("'{name}' is a Python keyword")));
    }
    let plugins = home.plugins_dir();
    let target = plugins.join(name);
    if target.exists() {
        return Err(refuse(format!("{} already exists", target.display())));
    }
    let template = plugins.join("_template");
    let io = |context: String| move |source| HostError::Io { context, source };
    std::fs::create_dir_all(&plugins)
        .map_err(io(format!("cannot create {}", plugins.display())))?;
    // Build beside the target and rename, so a failure leaves no half plugin.
    let staging = plugins.join(format!(".scaffold-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let built = if template.join("plugin.py").is_file() {
        copy_tree(&template, &staging)
    } else {
        std::fs::create_dir_all(&staging)
            .and_then(|_| std::fs::write(staging.join("plugin.py"), TEMPLATE))
    };
    let filled = built.and_then(|_| {
        let script = staging.join("plugin.py");
        let text = std::fs::read_to_string(&script)?;
        std::fs::write(&script, fill_name(&text, name))
    });
    let renamed = filled.and_then(|_| std::fs::rename(&staging, &target));
    if let Err(source) = renamed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io(format!("cannot create {}", target.display()))(source));
    }
    tracing::info!(target: "audit", event = "scaffold", plugin = name, path = %target.display());
    Ok(target)
}

/// Replaces the template's quoted name with `name`.
fn fill_name(text: &str, name: &str) -> String {
    text.replace("\"_template\"", &format!("\"{name}\""))
        .replace("'_template'", &format!("'{name}'"))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use greffon_core::Config;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path(), &Config::default());
        (dir, home)
    }

    #[test]
    fn scaffolds_from_the_builtin_template() {
        let (_dir, home) = home();
        let path = scaffold(&home, "hello").expect("scaffolded");
        let text = std::fs::read_to_string(path.join("plugin.py")).expect("read");
        assert!(text.contains("\"name\": \"hello\""));
        assert!(!text.contains("\"_template\""));
    }

    #[test]
    fn scaffolds_from_the_home_template_with_its_extra_files() {
        let (_dir, home) = home();
        let t = home.plugins_dir().join("_template");
        std::fs::create_dir_all(t.join("__pycache__")).expect("mkdir");
        std::fs::write(t.join("plugin.py"), "meta = {'name': '_template'}\n").expect("write");
        std::fs::write(t.join("helpers.py"), "X = 1\n").expect("write");
        let path = scaffold(&home, "mine").expect("scaffolded");
        assert_eq!(
            std::fs::read_to_string(path.join("plugin.py")).expect("read"),
            "meta = {'name': 'mine'}\n"
        );
        assert!(path.join("helpers.py").is_file());
        assert!(!path.join("__pycache__").exists());
    }

    #[test]
    fn refuses_existing_and_invalid_names() {
        let (_dir, home) = home();
        scaffold(&home, "taken").expect("first");
        let e = scaffold(&home, "taken").expect_err("exists");
        assert!(e.to_string().contains("already exists"), "{e}");
        for bad in ["", "Bad", "9lives", "_hidden", "a-b", "../x", "class"] {
            assert!(scaffold(&home, bad).is_err(), "{bad:?} accepted");
        }
    }
}
