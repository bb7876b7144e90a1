//! Plugin secrets: values kept out of `greffon.toml`, the database and
//! the environment — in the OS keyring (Secret Service) where one answers,
//! else in `app/secrets.json` (mode 0600, under the folder no sandbox may
//! be granted) — and the host's operations on them.

mod file;
mod keyring;

use crate::error::HostError;
use crate::registry::Registry;
use file::FileStore;
use greffon_core::{SecretStoreKind, is_valid_secret_name};
use greffon_protocol::api::SecretEntry;
use keyring::KeyringStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::OnceCell;

/// Largest accepted value: credentials are short; a big blob is a mistake.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Values by plugin, then by secret name.
type Values = BTreeMap<String, BTreeMap<String, String>>;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret store {} is not a valid store ({reason}); fix or remove it", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Others could read it: refused, as ssh refuses an exposed key.
    #[error("secret store {} may be read by other users (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("OS keyring (Secret Service): {0}")]
    Keyring(String),
    /// greffon does not unlock it: that would prompt in front of a server.
    #[error("the OS keyring is locked: unlock it (log in to the desktop session) and retry")]
    KeyringLocked,
}

/// Which store serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    File,
    Keyring,
}

/// The store of one home: the file or the keyring, chosen at first use
/// from `[secrets] store`.
#[derive(Debug)]
pub(crate) struct SecretStore {
    kind: SecretStoreKind,
    file: FileStore,
    keyring: KeyringStore,
    chosen: OnceCell<Backend>,
    /// The names last read from the store, for the listings that cannot
    /// wait on the keyring (`plugin info`): read at open and by every
    /// listing, kept up to date by every change made through this host.
    known: Mutex<BTreeMap<String, Vec<String>>>,
}

impl SecretStore {
    pub(crate) fn open(home: &Path, file: &Path, kind: SecretStoreKind) -> SecretStore {
        SecretStore {
            kind,
            file: FileStore::open(file),
            keyring: KeyringStore::new(home),
            chosen: OnceCell::new(),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// `auto` takes the keyring when one answers, unless the file already
    /// holds secrets: switching would hide them.
    async fn backend(&self) -> Backend {
        *self
            .chosen
            .get_or_init(|| async {
                match self.kind {
                    SecretStoreKind::File => Backend::File,
                    SecretStoreKind::Keyring => Backend::Keyring,
                    SecretStoreKind::Auto => {
                        let file_used = self.file.names().map_or(true, |n| !n.is_empty());
                        if !file_used && KeyringStore::available().await {
                            Backend::Keyring
                        } else {
                            Backend::File
                        }
                    }
                }
            })
            .await
    }

    /// Where the values live, for `doctor` and `secret list`.
    pub(crate) async fn location(&self) -> String {
        match self.backend().await {
            Backend::File => format!("file {}", self.file.path().display()),
            Backend::Keyring => "OS keyring (Secret Service)".into(),
        }
    }

    pub(crate) async fn get(
        &self,
        plugin: &str,
        name: &str,
    ) -> Result<Option<String>, SecretError> {
        match self.backend().await {
            Backend::File => self.file.get(plugin, name),
            Backend::Keyring => self.keyring.get(plugin, name).await,
        }
    }

    pub(crate) async fn names(&self) -> Result<BTreeMap<String, Vec<String>>, SecretError> {
        let names = match self.backend().await {
            Backend::File => self.file.names()?,
            Backend::Keyring => self.keyring.names().await?,
        };
        *self.known() = names.clone();
        Ok(names)
    }

    /// The names as last read (see `known`).
    pub(crate) fn known_names(&self) -> BTreeMap<String, Vec<String>> {
        self.known().clone()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn set(&self, plugin: &str, name: &str, value: &str) -> Result<(), SecretError> {
        match self.backend().await {
            Backend::File => self.file.set(plugin, name, value)?,
            Backend::Keyring => self.keyring.set(plugin, name, value).await?,
        }
        let mut known = self.known();
        let names = known.entry(plugin.to_string()).or_default();
        if let Err(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
            names.insert(at, name.to_string());
        }
        Ok(())
    }

    async fn remove(&self, plugin: &str, name: &str) -> Result<bool, SecretError> {
        let removed = match self.backend().await {
            Backend::File => self.file.remove(plugin, name)?,
            Backend::Keyring => self.keyring.remove(plugin, name).await?,
        };
        let mut known = self.known();
        if let Some(names) = known.get_mut(plugin) {
            names.retain(|n| n != name);
            if names.is_empty() {
                known.remove(plugin);
            }
        }
        Ok(removed)
    }
}

/// Where a home's secret values would live under `kind`, and whether a
/// Secret Service answers on the session bus: for `doctor`.
pub async fn store_report(home: &greffon_core::Home, kind: SecretStoreKind) -> (String, bool) {
    let store = SecretStore::open(home.root(), &home.secrets_file(), kind);
    let keyring = KeyringStore::available().await;
    (store.location().await, keyring)
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

/// Every declared secret of `plugin` (or of every plugin in `registry`),
/// set or not, then the `stored` ones no plugin declares.
pub(crate) fn secret_list(
    registry: &Registry,
    plugin: Option<&str>,
    stored: &BTreeMap<String, Vec<String>>,
) -> Vec<SecretEntry> {
    let is_set = |p: &str, n: &str| stored.get(p).is_some_and(|s| s.iter().any(|x| x == n));
    let mut out: Vec<SecretEntry> = Vec::new();
    for p in registry.all() {
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
    for (p, names) in stored {
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
    out
}

impl SecretStore {
    /// Stores a value for one of the `declared` secrets of `plugin`, after
    /// checking the names and the value. A plugin reads the new value at
    /// its next `greffon.secret()`: nothing restarts.
    pub(crate) async fn set_declared(
        &self,
        plugin: &str,
        name: &str,
        value: &str,
        declared: &[String],
    ) -> Result<(), HostError> {
        check_name(plugin, name)?;
        if !declared.iter().any(|n| n == name) {
            let listed = if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            };
            return Err(HostError::InvalidSecret(format!(
                "plugin '{plugin}' does not declare the secret '{name}' in meta[\"secrets\"] (declared: {listed})"
            )));
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
        self.set(plugin, name, value).await?;
        // Hidden from now on, even before a worker reads it.
        crate::redact::remember(name, value);
        tracing::info!(target: "audit", event = "secret_set", plugin, secret = name);
        Ok(())
    }

    /// Removes a stored secret (also of a plugin whose folder is gone).
    pub(crate) async fn remove_checked(&self, plugin: &str, name: &str) -> Result<(), HostError> {
        check_name(plugin, name)?;
        if !self.remove(plugin, name).await? {
            return Err(HostError::SecretNotSet {
                plugin: plugin.to_string(),
                name: name.to_string(),
            });
        }
        tracing::info!(target: "audit", event = "secret_removed", plugin, secret = name);
        Ok(())
    }
}
