//! The secret store: values of the secrets plugins declare, kept out of
//! `greffon.toml`, the database and the environment, in one JSON file
//! (`<home>/app/secrets.json`, mode 0600) that no sandbox may be granted.

use crate::error::HostError;
use crate::host::Inner;
use greffon_core::is_valid_secret_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Largest accepted value: credentials are short; a big blob is a mistake.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Values by plugin, then by secret name.
type Values = BTreeMap<String, BTreeMap<String, String>>;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("secret store {} is not a valid store ({reason}); fix or remove it", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Others could read it: refused, as ssh refuses an exposed key.
    #[error("secret store {} may be read by other users (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
}

/// The file store. Writes go to a new file renamed over the old one,
/// under an advisory lock shared with other greffon processes of the home.
#[derive(Debug)]
pub(crate) struct SecretStore {
    path: PathBuf,
    /// One read-modify-write at a time within this process (the file lock
    /// orders processes, not threads sharing one open file).
    writing: Mutex<()>,
}

impl SecretStore {
    pub(crate) fn open(path: &Path) -> SecretStore {
        SecretStore {
            path: path.to_path_buf(),
            writing: Mutex::new(()),
        }
    }

    /// The value of `plugin`'s secret `name`, if set.
    pub(crate) fn get(&self, plugin: &str, name: &str) -> Result<Option<String>, SecretError> {
        Ok(self.read()?.get(plugin).and_then(|m| m.get(name)).cloned())
    }

    /// The names set, by plugin (values are not returned).
    pub(crate) fn names(&self) -> Result<BTreeMap<String, Vec<String>>, SecretError> {
        Ok(self
            .read()?
            .into_iter()
            .map(|(plugin, m)| (plugin, m.into_keys().collect()))
            .collect())
    }

    pub(crate) fn set(&self, plugin: &str, name: &str, value: &str) -> Result<(), SecretError> {
        self.change(|values| {
            values
                .entry(plugin.to_string())
                .or_default()
                .insert(name.to_string(), value.to_string());
            true
        })
        .map(|_| ())
    }

    /// Removes a secret; false when it was not set.
    pub(crate) fn remove(&self, plugin: &str, name: &str) -> Result<bool, SecretError> {
        self.change(|values| {
            let Some(m) = values.get_mut(plugin) else {
                return false;
            };
            let removed = m.remove(name).is_some();
            if m.is_empty() {
                values.remove(plugin);
            }
            removed
        })
    }

    fn io(&self, source: io::Error) -> SecretError {
        SecretError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<Values, SecretError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Values::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mode = file
            .metadata()
            .map_err(|e| self.io(e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretError::Exposed {
                path: self.path.clone(),
                mode: mode & 0o777,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| self.io(e))?;
        if text.trim().is_empty() {
            return Ok(Values::new());
        }
        serde_json::from_str(&text).map_err(|e| SecretError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Applies `edit` to the stored values and writes them back when it
    /// answers true (something changed); returns what `edit` answered.
    fn change(&self, edit: impl FnOnce(&mut Values) -> bool) -> Result<bool, SecretError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let _lock = FileLock::take(&self.path.with_extension("lock")).map_err(|e| self.io(e))?;
        let mut values = self.read()?;
        if !edit(&mut values) {
            return Ok(false);
        }
        let text = serde_json::to_string_pretty(&values).map_err(|e| SecretError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let fresh = self.path.with_extension("json.new");
        let _ = std::fs::remove_file(&fresh);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&fresh)
            .map_err(|e| self.io(e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&fresh, &self.path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&fresh);
                self.io(e)
            })?;
        Ok(true)
    }
}

/// One secret as `secret list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEntry {
    pub plugin: String,
    pub name: String,
    /// The store holds a value.
    pub set: bool,
    /// The plugin (as discovered) declares it; a stored secret of a
    /// removed plugin, or one its meta dropped, is listed undeclared until
    /// `secret rm`.
    pub declared: bool,
}

fn check_name(plugin: &str, name: &str) -> Result<(), HostError> {
    if !greffon_core::is_valid_name(plugin) {
        return Err(HostError::InvalidSecret(format!(
            "'{plugin}' is not a valid plugin name"
        )));
    }
    if !is_valid_secret_name(name) {
        return Err(HostError::InvalidSecret(format!(
            "'{name}' is not a valid secret name (letters, digits and '_', not starting with a digit, at most 64)"
        )));
    }
    Ok(())
}

impl Inner {
    /// Every declared secret of `plugin` (or of every plugin), set or not,
    /// then the stored ones no plugin declares.
    pub(crate) fn secret_list(&self, plugin: Option<&str>) -> Result<Vec<SecretEntry>, HostError> {
        let stored = self.services.secrets.names()?;
        let is_set = |p: &str, n: &str| stored.get(p).is_some_and(|s| s.iter().any(|x| x == n));
        let mut out: Vec<SecretEntry> = Vec::new();
        for p in self.all_plugins() {
            if plugin.is_some_and(|want| want != p.key) {
                continue;
            }
            let declared = p.status().meta.as_ref().map(|m| m.secrets.clone());
            for name in declared.unwrap_or_default() {
                out.push(SecretEntry {
                    set: is_set(&p.key, &name),
                    plugin: p.key.clone(),
                    name,
                    declared: true,
                });
            }
        }
        for (p, names) in &stored {
            if plugin.is_some_and(|want| want != p) {
                continue;
            }
            for name in names {
                if !out.iter().any(|e| &e.plugin == p && &e.name == name) {
                    out.push(SecretEntry {
                        plugin: p.clone(),
                        name: name.clone(),
                        set: true,
                        declared: false,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether the store holds any secret of `plugin`: listing those of a
    /// removed plugin is not an unknown-plugin error.
    pub(crate) fn secret_stored_for(&self, plugin: &str) -> Result<bool, HostError> {
        Ok(self.services.secrets.names()?.contains_key(plugin))
    }

    /// Stores a value for a secret the plugin declares. A plugin reads the
    /// new value at its next `greffon.secret()`: nothing restarts.
    pub(crate) fn set_secret(
        &self,
        plugin: &str,
        name: &str,
        value: &str,
    ) -> Result<(), HostError> {
        check_name(plugin, name)?;
        let declared = self
            .all_plugins()
            .into_iter()
            .find(|p| p.key == plugin)
            .map(|p| {
                p.status()
                    .meta
                    .as_ref()
                    .map(|m| m.secrets.clone())
                    .unwrap_or_default()
            });
        match declared {
            None => {
                return Err(HostError::UnknownPlugin(format!(
                    "unknown plugin '{plugin}'"
                )));
            }
            Some(d) if !d.iter().any(|n| n == name) => {
                let listed = if d.is_empty() {
                    "none".to_string()
                } else {
                    d.join(", ")
                };
                return Err(HostError::InvalidSecret(format!(
                    "plugin '{plugin}' does not declare the secret '{name}' in meta[\"secrets\"] (declared: {listed})"
                )));
            }
            Some(_) => {}
        }
        if value.is_empty() {
            return Err(HostError::InvalidSecret(format!(
                "the value of secret '{name}' is empty"
            )));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(HostError::InvalidSecret(format!(
                "the value of secret '{name}' is {} bytes, more than {MAX_SECRET_BYTES}",
                value.len()
            )));
        }
        if value.contains('\0') {
            return Err(HostError::InvalidSecret(format!(
                "the value of secret '{name}' contains a NUL byte"
            )));
        }
        self.services.secrets.set(plugin, name, value)?;
        // Hidden from now on, even before a worker reads it.
        crate::redact::remember(name, value);
        tracing::info!(target: "audit", event = "secret_set", plugin, secret = name);
        Ok(())
    }

    /// Removes a stored secret (also of a plugin whose folder is gone);
    /// false when none was set.
    pub(crate) fn remove_secret(&self, plugin: &str, name: &str) -> Result<bool, HostError> {
        check_name(plugin, name)?;
        let removed = self.services.secrets.remove(plugin, name)?;
        if removed {
            tracing::info!(target: "audit", event = "secret_removed", plugin, secret = name);
        }
        Ok(removed)
    }
}

/// An exclusive `flock` held until dropped.
struct FileLock(File);

impl FileLock {
    fn take(path: &Path) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)?;
        // SAFETY: flock on a descriptor this struct owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app").join("secrets.json");
        let store = SecretStore::open(&path);
        assert_eq!(store.get("gh", "TOKEN").expect("read"), None);
        store.set("gh", "TOKEN", "v1").expect("set");
        store.set("gh", "OTHER", "v2").expect("set");
        store.set("mail", "TOKEN", "v3").expect("set");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SecretStore::open(&path);
        assert_eq!(
            again.get("gh", "TOKEN").expect("read").as_deref(),
            Some("v1")
        );
        assert_eq!(
            again.get("mail", "TOKEN").expect("read").as_deref(),
            Some("v3")
        );
        assert_eq!(again.names().expect("names")["gh"], vec!["OTHER", "TOKEN"]);
        assert!(again.remove("gh", "TOKEN").expect("rm"));
        assert!(!again.remove("gh", "TOKEN").expect("rm"));
        assert!(again.remove("mail", "TOKEN").expect("rm"));
        assert!(!again.names().expect("names").contains_key("mail"));
    }

    #[test]
    fn an_exposed_or_broken_store_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.json");
        let store = SecretStore::open(&path);
        store.set("gh", "TOKEN", "v1").expect("set");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = store.get("gh", "TOKEN").expect_err("refused").to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "{not json").expect("write");
        let e = store.names().expect_err("refused").to_string();
        assert!(
            e.contains("not a valid store") && e.contains("secrets.json"),
            "{e}"
        );
    }
}
