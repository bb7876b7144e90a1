//! The file store: `app/secrets.json`, mode 0600, under the folder no
//! sandbox may be granted. The fallback where no OS keyring answers.

use super::{SecretError, Values};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file store, `app/secrets.json` (mode 0600). Writes go to a new file renamed over the old one,
/// under an advisory lock shared with other greffon processes of the home.
#[derive(Debug)]
pub(crate) struct FileStore {
    path: PathBuf,
    /// One read-modify-write at a time within this process (the file lock
    /// orders processes, not threads sharing one open file).
    writing: Mutex<()>,
}

impl FileStore {
    pub(crate) fn open(path: &Path) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
            writing: Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
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
        let store = FileStore::open(&path);
        assert_eq!(store.get("gh", "TOKEN").expect("read"), None);
        store.set("gh", "TOKEN", "v1").expect("set");
        store.set("gh", "OTHER", "v2").expect("set");
        store.set("mail", "TOKEN", "v3").expect("set");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = FileStore::open(&path);
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
        let store = FileStore::open(&path);
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
