//! The four permissions of the contract and their accepted spellings.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a plugin may do beyond computing; anything not declared is denied
/// by the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Outbound HTTP(S) through the host's broker.
    Net,
    /// Read the declared paths.
    FsRead,
    /// Write the declared paths.
    FsWrite,
    /// Start subprocesses.
    Process,
}

impl Permission {
    /// Every permission, in canonical order.
    pub const ALL: [Permission; 4] = [
        Permission::Net,
        Permission::FsRead,
        Permission::FsWrite,
        Permission::Process,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Net => "net",
            Permission::FsRead => "fs_read",
            Permission::FsWrite => "fs_write",
            Permission::Process => "process",
        }
    }

    /// Parses a canonical name or a synonym from the original contract
    /// (`network` → `net`, `filesystem` → `fs_read`). Case and surrounding
    /// blanks are ignored; `-` is read as `_`.
    pub fn parse(name: &str) -> Option<Permission> {
        let key = name.trim().to_ascii_lowercase().replace('-', "_");
        Some(match key.as_str() {
            "net" | "network" => Permission::Net,
            "fs_read" | "filesystem" => Permission::FsRead,
            "fs_write" => Permission::FsWrite,
            "process" => Permission::Process,
            _ => return None,
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_and_synonyms_parse() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("network"), Some(Permission::Net));
        assert_eq!(Permission::parse("filesystem"), Some(Permission::FsRead));
        assert_eq!(Permission::parse(" FS-Write "), Some(Permission::FsWrite));
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(Permission::parse("root"), None);
        assert_eq!(Permission::parse(""), None);
        assert_eq!(Permission::parse("netx"), None);
    }
}
