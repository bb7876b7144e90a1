//! The registry's persisted part in `greffon.db`: which plugins are
//! enabled, and with which permissions and secrets.

use crate::error::HostError;
use crate::registry::Granted;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqlSafeStr};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Migrations are embedded (not read from disk at run time) so a copied
/// binary carries them. Other crates keep their tables in the same file
/// with their own migrations (the scheduler's start at 100), so versions
/// this list does not know are expected.
fn migrator() -> Migrator {
    let mut m = Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("plugins"),
            MigrationType::Simple,
            include_str!("../migrations/0001_plugins.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("plugin secrets"),
            MigrationType::Simple,
            include_str!("../migrations/0002_plugin_secrets.sql").into_sql_str(),
            false,
        ),
    ]);
    m.set_ignore_missing(true);
    m
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: SqlitePool,
    /// Named in its errors.
    path: PathBuf,
}

impl Store {
    pub(crate) async fn open(path: &Path) -> Result<Store, HostError> {
        Store::connect(path)
            .await
            .map_err(|source| HostError::Database {
                path: path.to_path_buf(),
                source,
            })
    }

    async fn connect(path: &Path) -> Result<Store, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(Store {
            pool,
            path: path.to_path_buf(),
        })
    }

    fn error(&self, source: sqlx::Error) -> HostError {
        HostError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Enabled plugins and what they were granted.
    pub(crate) async fn enabled(&self) -> Result<HashMap<String, Granted>, HostError> {
        let rows = sqlx::query("SELECT name, permissions, secrets FROM plugins WHERE enabled = 1")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let name: String = r.get("name");
                let perms: String = r.get("permissions");
                let secrets: String = r.get("secrets");
                let grant = Granted {
                    permissions: serde_json::from_str(&perms).unwrap_or_default(),
                    secrets: serde_json::from_str(&secrets).unwrap_or_default(),
                };
                (name, grant)
            })
            .collect())
    }

    pub(crate) async fn set_enabled(&self, name: &str, granted: &Granted) -> Result<(), HostError> {
        let perms = serde_json::to_string(&granted.permissions).unwrap_or_else(|_| "[]".into());
        let secrets = serde_json::to_string(&granted.secrets).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO plugins (name, enabled, permissions, secrets, updated_at) VALUES (?, 1, ?, ?, ?)
             ON CONFLICT(name) DO UPDATE SET enabled = 1, permissions = excluded.permissions,
             secrets = excluded.secrets, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(perms)
        .bind(secrets)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(crate) async fn set_disabled(&self, name: &str) -> Result<(), HostError> {
        sqlx::query("UPDATE plugins SET enabled = 0, updated_at = ? WHERE name = ?")
            .bind(chrono::Utc::now().to_rfc3339())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greffon_core::Permission;

    #[tokio::test]
    async fn enabled_set_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("greffon.db");
        let s = Store::open(&db).await.expect("open");
        let grant = Granted {
            permissions: vec![Permission::Net],
            secrets: vec!["TOKEN".into()],
        };
        s.set_enabled("a", &grant).await.expect("write");
        s.set_enabled("b", &Granted::default())
            .await
            .expect("write");
        s.set_disabled("b").await.expect("write");
        s.close().await;
        let s = Store::open(&db).await.expect("reopen");
        let enabled = s.enabled().await.expect("read");
        assert_eq!(enabled.len(), 1);
        assert_eq!(enabled["a"], grant);
    }
}
