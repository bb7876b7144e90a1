//! What a plugin folder declares it needs: `requirements.txt`, or an
//! inline script-metadata block (PEP 723) at the top of `plugin.py`, each
//! line checked so that it cannot reach outside the plugin folder or the
//! index the operator configured.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A plugin's requirements, as uv will read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirements {
    /// Where they were declared, for messages.
    pub source: &'static str,
    /// One requirement per entry, local paths made absolute, sorted.
    pub lines: Vec<String>,
    /// The local wheels or folders they name: their content is part of
    /// the environment's key.
    pub local: Vec<PathBuf>,
}

impl Requirements {
    /// Names the content of the declaration: the requirements and the
    /// bytes of every local file they install.
    pub(crate) fn digest(&self, hasher: &mut Sha256) {
        for line in &self.lines {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        for path in &self.local {
            if let Ok(bytes) = std::fs::read(path) {
                hasher.update(Sha256::digest(&bytes));
            }
        }
    }
}

/// One declared requirement, with its line in `requirements.txt` (none
/// in an inline block).
type Entry = (Option<usize>, String);

const FILE: &str = "requirements.txt";
const INLINE: &str = "the `# /// script` block of plugin.py";

/// What the plugin in `dir` declares; `None` when it declares nothing (it
/// runs on the base interpreter). An error names the file, the line and
/// the rule.
pub(crate) fn declared(dir: &Path) -> Result<Option<Requirements>, String> {
    let file = match std::fs::read_to_string(dir.join(FILE)) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {FILE}: {e}")),
    };
    let script = std::fs::read_to_string(dir.join("plugin.py")).unwrap_or_default();
    let inline = inline_block(&script)?;
    let (source, entries) = match (file, inline) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "requirements are declared twice, in {FILE} and in {INLINE}; keep one"
            ));
        }
        (None, None) => return Ok(None),
        (Some(text), None) => (FILE, file_entries(&text)),
        (None, Some(deps)) => (INLINE, deps),
    };
    let base = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the plugin folder: {e}"))?;
    let mut lines = Vec::new();
    let mut local = Vec::new();
    for (line_no, entry) in entries {
        let at = |rule: String| match line_no {
            Some(n) => format!("{source} line {n}: {rule}"),
            None => format!("{source}: {rule}"),
        };
        let (line, path) = checked(&entry, &base).map_err(at)?;
        lines.push(line);
        local.extend(path);
    }
    if lines.is_empty() {
        return Ok(None);
    }
    lines.sort();
    lines.dedup();
    Ok(Some(Requirements {
        source,
        lines,
        local,
    }))
}

/// The requirement entries of a `requirements.txt`, with their line
/// numbers: comments and blank lines dropped, continuations joined.
fn file_entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let uncommented = match raw.find('#') {
            Some(0) => "",
            Some(at) if raw[..at].ends_with(char::is_whitespace) => &raw[..at],
            _ => raw,
        };
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        let (text, continues) = match uncommented.trim_end().strip_suffix('\\') {
            Some(head) => (head, true),
            None => (uncommented, false),
        };
        joined.push_str(text.trim());
        joined.push(' ');
        if continues {
            pending = Some((start, joined));
        } else if !joined.trim().is_empty() {
            out.push((Some(start), joined.trim().to_string()));
        }
    }
    if let Some((start, joined)) = pending.filter(|(_, j)| !j.trim().is_empty()) {
        out.push((Some(start), joined.trim().to_string()));
    }
    out
}

/// The `dependencies` of a PEP 723 block (`# /// script` … `# ///`), if
/// `plugin.py` has one.
fn inline_block(script: &str) -> Result<Option<Vec<Entry>>, String> {
    let mut lines = script.lines();
    if !lines.any(|l| l.trim_end() == "# /// script") {
        return Ok(None);
    }
    let mut toml_text = String::new();
    let mut closed = false;
    for line in lines {
        if line.trim_end() == "# ///" {
            closed = true;
            break;
        }
        let content = match line.strip_prefix("# ") {
            Some(c) => c,
            None if line.trim_end() == "#" => "",
            None => {
                return Err(format!(
                    "{INLINE}: every line must start with '#' (found {line:?})"
                ));
            }
        };
        toml_text.push_str(content);
        toml_text.push('\n');
    }
    if !closed {
        return Err(format!("{INLINE} is not closed by a '# ///' line"));
    }
    let table: toml::Table = toml::from_str(&toml_text)
        .map_err(|e| format!("{INLINE} is not valid TOML: {}", e.message()))?;
    let Some(deps) = table.get("dependencies") else {
        return Ok(Some(Vec::new()));
    };
    let deps = deps
        .as_array()
        .ok_or_else(|| format!("{INLINE}: `dependencies` must be a list of strings"))?;
    deps.iter()
        .map(|d| {
            d.as_str()
                .map(|s| (None, s.trim().to_string()))
                .ok_or_else(|| format!("{INLINE}: `dependencies` must be a list of strings"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// One requirement made safe to hand to uv: options are refused (indexes
/// are the operator's to choose), a URL is refused, and a local path must
/// lie inside the plugin folder (made absolute). Returns the line and the
/// local path it names.
fn checked(entry: &str, base: &Path) -> Result<(String, Option<PathBuf>), String> {
    let mut words = entry.split_whitespace();
    let first = words.next().unwrap_or_default();
    if first.starts_with('-') {
        return Err(refused_option(first));
    }
    // A requirement may carry hashes after it (`--hash=sha256:…`), which
    // only narrow what is accepted; any other option is refused.
    let (requirement, options) = match entry.find(" -") {
        Some(at) => (entry[..at].trim(), entry[at..].trim()),
        None => (entry.trim(), ""),
    };
    for option in options.split_whitespace() {
        if !option.starts_with("--hash=") {
            return Err(refused_option(option));
        }
    }
    let target = match requirement
        .split_once(" @ ")
        .or_else(|| requirement.split_once('@'))
    {
        Some((_, url)) if url.contains("://") || looks_like_path(url.trim()) => Some(url.trim()),
        _ if looks_like_path(requirement) => Some(requirement),
        _ => None,
    };
    let Some(target) = target else {
        if requirement.contains("://") {
            return Err(url_refused(requirement));
        }
        return Ok((entry.to_string(), None));
    };
    let path = match target.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if target.contains("://") => return Err(url_refused(target)),
        None => base.join(target),
    };
    let real = path
        .canonicalize()
        .map_err(|e| format!("local path '{target}' cannot be read: {e}"))?;
    if !real.starts_with(base) {
        return Err(format!(
            "local path '{target}' is outside the plugin folder; a plugin may install only files it ships"
        ));
    }
    let line = match requirement.split_once('@') {
        Some((name, _)) if !looks_like_path(requirement) => {
            format!("{} @ file://{}", name.trim(), real.display())
        }
        _ => real.display().to_string(),
    };
    let line = format!("{line} {options}").trim_end().to_string();
    Ok((line, Some(real)))
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('.') || s.starts_with('/') || s.starts_with('~') || s.contains('/')
}

fn url_refused(url: &str) -> String {
    format!(
        "'{url}' is a direct URL; packages come from the index greffon is configured with (UV_INDEX_URL, UV_FIND_LINKS), or from a file inside the plugin folder"
    )
}

fn refused_option(option: &str) -> String {
    let name = option.split('=').next().unwrap_or(option);
    let why = match name {
        "-e" | "--editable" => "editable installs would run code from outside the environment",
        "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links" | "--no-index" => {
            "indexes are the operator's to choose (UV_INDEX_URL, UV_FIND_LINKS), not a plugin's"
        }
        "-r" | "--requirement" | "-c" | "--constraint" => {
            "other files are not read: list every requirement here"
        }
        _ => "only requirements (and their --hash) are accepted",
    };
    format!("option '{name}' is refused: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn nothing_declared_is_none() {
        let dir = folder(&[("plugin.py", "plugin = None\n")]);
        assert_eq!(declared(dir.path()), Ok(None));
        let dir = folder(&[("plugin.py", ""), ("requirements.txt", "# none\n\n")]);
        assert_eq!(declared(dir.path()), Ok(None));
    }

    #[test]
    fn a_requirements_file_is_read_sorted_without_comments() {
        let dir = folder(&[
            ("plugin.py", ""),
            (
                "requirements.txt",
                "# tools\nzeta==2.0  # the newest\nalpha>=1 \\\n  ; python_version >= '3'\nalpha>=1 ; python_version >= '3'\nbeta==1 --hash=sha256:00ff\n",
            ),
        ]);
        let r = declared(dir.path()).expect("valid").expect("declared");
        assert_eq!(r.source, FILE);
        assert_eq!(
            r.lines,
            [
                "alpha>=1 ; python_version >= '3'",
                "beta==1 --hash=sha256:00ff",
                "zeta==2.0"
            ]
        );
    }

    #[test]
    fn an_inline_block_is_read() {
        let script = "# /// script\n# requires-python = \">=3.10\"\n# dependencies = [\n#   \"tiny==1.0\",\n#   \"other\",\n# ]\n# ///\nplugin = None\n";
        let dir = folder(&[("plugin.py", script)]);
        let r = declared(dir.path()).expect("valid").expect("declared");
        assert_eq!(r.source, INLINE);
        assert_eq!(r.lines, ["other", "tiny==1.0"]);
    }

    #[test]
    fn declaring_twice_names_both() {
        let script = "# /// script\n# dependencies = [\"a\"]\n# ///\n";
        let dir = folder(&[("plugin.py", script), ("requirements.txt", "b\n")]);
        let e = declared(dir.path()).expect_err("refused");
        assert!(
            e.contains("requirements.txt") && e.contains("# /// script"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_inline_block_is_refused() {
        for (script, words) in [
            ("# /// script\n# dependencies = [\"a\"]\n", "not closed"),
            (
                "# /// script\n# dependencies = [\n# ///\n",
                "not valid TOML",
            ),
            (
                "# /// script\n# dependencies = \"a\"\n# ///\n",
                "list of strings",
            ),
            ("# /// script\ndependencies = []\n# ///\n", "start with '#'"),
        ] {
            let dir = folder(&[("plugin.py", script)]);
            let e = declared(dir.path()).expect_err(script);
            assert!(e.contains(words), "{script:?}: {e}");
        }
    }

    #[test]
    fn escapes_are_refused_naming_the_line_and_the_rule() {
        for (line, words) in [
            ("-e ../..", "'-e' is refused: editable"),
            (
                "--index-url https://evil.example/simple",
                "'--index-url' is refused: indexes",
            ),
            (
                "--extra-index-url=https://evil.example",
                "'--extra-index-url' is refused",
            ),
            ("-r ../other/requirements.txt", "'-r' is refused"),
            (
                "tiny==1.0 --index-url https://x",
                "'--index-url' is refused",
            ),
            ("tiny @ https://evil.example/tiny.whl", "direct URL"),
            ("https://evil.example/tiny.whl", "direct URL"),
            ("../outside.whl", "outside the plugin folder"),
            ("tiny @ file:///etc/passwd", "outside the plugin folder"),
            ("./missing.whl", "cannot be read"),
        ] {
            let dir = folder(&[
                ("plugin.py", ""),
                ("requirements.txt", &format!("ok==1\n{line}\n")),
            ]);
            std::fs::write(dir.path().parent().expect("tmp").join("outside.whl"), "x").ok();
            let e = declared(dir.path()).expect_err(line);
            assert!(e.starts_with("requirements.txt line 2: "), "{line}: {e}");
            assert!(e.contains(words), "{line}: {e}");
        }
    }

    #[test]
    fn a_wheel_inside_the_folder_is_made_absolute_and_keyed_by_content() {
        let dir = folder(&[
            ("plugin.py", ""),
            ("requirements.txt", "./wheels/tiny-1.0-py3-none-any.whl\n"),
            ("wheels/tiny-1.0-py3-none-any.whl", "one"),
        ]);
        let r = declared(dir.path()).expect("valid").expect("declared");
        let real = dir.path().canonicalize().expect("real");
        assert_eq!(
            r.lines,
            [real
                .join("wheels/tiny-1.0-py3-none-any.whl")
                .display()
                .to_string()]
        );
        let key = |r: &Requirements| {
            let mut h = Sha256::new();
            r.digest(&mut h);
            h.finalize()
        };
        let before = key(&r);
        std::fs::write(dir.path().join("wheels/tiny-1.0-py3-none-any.whl"), "two").expect("write");
        assert_ne!(before, key(&r), "a changed wheel changes the key");
    }
}
