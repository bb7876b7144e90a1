//! The greffon plugin model, pure and without I/O beyond reading the
//! config file.
//!
//! # Layout
//!
//! - [`Permission`]: the four permissions and their synonyms.
//! - [`PluginMeta`]: `Plugin.meta` judged and normalized; every problem is
//!   reported at once.
//! - [`InputSchema`]: `inputs.schema` (Pydantic, JSON Schema or the
//!   simplified dict) as one compiled JSON Schema that checks arguments and
//!   fills defaults.
//! - [`Allowlist`]: which URLs a plugin's HTTP requests may reach, and
//!   [`is_public`] for the addresses they may connect to.
//! - [`Config`]: `greffon.toml` with a default for every key, and errors
//!   that name the file, line and key.
//! - [`Home`]: where the home is and what lives inside it.
//! - [`Finding`]: a problem of a plugin with the fix `plugin check` shows.

#![forbid(unsafe_code)]

mod allowlist;
mod config;
mod fix;
mod home;
mod meta;
mod permission;
#[cfg(test)]
mod properties;
mod schema;

pub use allowlist::{Allowed, Allowlist, Deny, Pattern, is_public};
pub use config::{
    Config, ConfigError, LlmBackend, LlmConfig, PluginConfig, PythonConfig, SandboxMode,
    SchedulerConfig, SecretStoreKind, SecretsConfig, ServerConfig,
};
pub use fix::{Finding, fix_for};
pub use home::Home;
pub use meta::{DeclaredLimits, MetaError, PluginMeta, is_valid_name, is_valid_secret_name};
pub use permission::Permission;
pub use schema::{InputSchema, SchemaSource, Violation, describe, is_string_property, normalize};
