//! The OS keyring: the freedesktop Secret Service (GNOME Keyring,
//! KWallet, KeePassXC) on the session bus. Each secret is one item of the
//! default collection, found by its attributes; greffon never unlocks a
//! locked keyring (that would pop a prompt in front of a server).

use super::SecretError;
use secret_service::{EncryptionType, SecretService};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one exchange with the Secret Service may take: a hung daemon
/// must not hang a plugin call or a command.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The items of one greffon home in the user's keyring.
pub(crate) struct KeyringStore {
    /// The home's path, an attribute of every item: two homes of one user
    /// do not see each other's secrets.
    home: String,
    /// The bus connection and encrypted session, opened at first use and
    /// kept: opening them (a D-Bus handshake and a Diffie-Hellman
    /// exchange) costs far more than a read. Dropped after a failure, so
    /// a restarted daemon is reached again.
    session: tokio::sync::Mutex<Option<Arc<SecretService<'static>>>>,
}

impl std::fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringStore")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

fn failed(e: secret_service::Error) -> SecretError {
    match e {
        secret_service::Error::Locked => SecretError::KeyringLocked,
        other => SecretError::Keyring(other.to_string()),
    }
}

/// Runs one exchange, bounded by [`ANSWER_WITHIN`].
async fn bounded<T>(
    exchange: impl Future<Output = Result<T, secret_service::Error>>,
) -> Result<T, SecretError> {
    match tokio::time::timeout(ANSWER_WITHIN, exchange).await {
        Ok(outcome) => outcome.map_err(failed),
        Err(_) => Err(SecretError::Keyring(format!(
            "no answer within {} s",
            ANSWER_WITHIN.as_secs()
        ))),
    }
}

async fn connect() -> Result<SecretService<'static>, SecretError> {
    // Dh: the value crosses the bus encrypted, not in clear.
    bounded(SecretService::connect(EncryptionType::Dh)).await
}

impl KeyringStore {
    pub(crate) fn new(home: &std::path::Path) -> KeyringStore {
        KeyringStore {
            home: home.display().to_string(),
            session: tokio::sync::Mutex::new(None),
        }
    }

    async fn service(&self) -> Result<Arc<SecretService<'static>>, SecretError> {
        let mut slot = self.session.lock().await;
        if let Some(ss) = slot.as_ref() {
            return Ok(ss.clone());
        }
        let ss = Arc::new(connect().await?);
        *slot = Some(ss.clone());
        Ok(ss)
    }

    /// Runs `exchange` on the kept session, forgetting the session when
    /// the exchange failed for another reason than a locked keyring.
    async fn exchange<T, F>(
        &self,
        exchange: impl FnOnce(Arc<SecretService<'static>>) -> F,
    ) -> Result<T, SecretError>
    where
        F: Future<Output = Result<T, SecretError>>,
    {
        let outcome = exchange(self.service().await?).await;
        if matches!(outcome, Err(SecretError::Keyring(_))) {
            *self.session.lock().await = None;
        }
        outcome
    }

    fn attributes<'a>(&'a self, item: Option<(&'a str, &'a str)>) -> HashMap<&'a str, &'a str> {
        let mut a = HashMap::from([("application", "greffon"), ("greffon_home", &*self.home)]);
        if let Some((plugin, name)) = item {
            a.insert("plugin", plugin);
            a.insert("name", name);
        }
        a
    }

    /// Whether a Secret Service answers and has a default collection to
    /// store into.
    pub(crate) async fn available() -> bool {
        let Ok(ss) = connect().await else {
            return false;
        };
        bounded(ss.get_default_collection()).await.is_ok()
    }

    pub(crate) async fn get(
        &self,
        plugin: &str,
        name: &str,
    ) -> Result<Option<String>, SecretError> {
        self.exchange(|ss| async move {
            let found = bounded(ss.search_items(self.attributes(Some((plugin, name))))).await?;
            let Some(item) = found.unlocked.first() else {
                return match found.locked.is_empty() {
                    true => Ok(None),
                    false => Err(SecretError::KeyringLocked),
                };
            };
            let bytes = bounded(item.get_secret()).await?;
            String::from_utf8(bytes).map(Some).map_err(|_| {
                SecretError::Keyring(format!("the value of {plugin}/{name} is not UTF-8"))
            })
        })
        .await
    }

    /// The names stored for this home, by plugin (attributes are readable
    /// even in a locked keyring).
    pub(crate) async fn names(&self) -> Result<BTreeMap<String, Vec<String>>, SecretError> {
        self.exchange(|ss| async move {
            let found = bounded(ss.search_items(self.attributes(None))).await?;
            let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for item in found.unlocked.iter().chain(&found.locked) {
                let a = bounded(item.get_attributes()).await?;
                if let (Some(p), Some(n)) = (a.get("plugin"), a.get("name")) {
                    names.entry(p.clone()).or_default().push(n.clone());
                }
            }
            for list in names.values_mut() {
                list.sort();
                list.dedup();
            }
            Ok(names)
        })
        .await
    }

    pub(crate) async fn set(
        &self,
        plugin: &str,
        name: &str,
        value: &str,
    ) -> Result<(), SecretError> {
        self.exchange(|ss| async move {
            let collection = bounded(ss.get_default_collection()).await?;
            if bounded(collection.is_locked()).await? {
                return Err(SecretError::KeyringLocked);
            }
            let label = format!("greffon: secret {name} of plugin {plugin} ({})", self.home);
            bounded(collection.create_item(
                &label,
                self.attributes(Some((plugin, name))),
                value.as_bytes(),
                true,
                "text/plain",
            ))
            .await?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn remove(&self, plugin: &str, name: &str) -> Result<bool, SecretError> {
        self.exchange(|ss| async move {
            let found = bounded(ss.search_items(self.attributes(Some((plugin, name))))).await?;
            if found.unlocked.is_empty() && !found.locked.is_empty() {
                return Err(SecretError::KeyringLocked);
            }
            for item in &found.unlocked {
                bounded(item.delete()).await?;
            }
            Ok(!found.unlocked.is_empty())
        })
        .await
    }
}
