//! `app/server.json`: where a running server listens, for the CLI.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The contents of `server.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `127.0.0.1:8765`.
    pub address: String,
    /// `http://127.0.0.1:8765`.
    pub url: String,
    pub pid: u32,
}

impl Endpoint {
    /// Writes the file atomically (a reader never sees half of it).
    pub(crate) fn write(&self, file: &Path) -> std::io::Result<()> {
        let tmp = file.with_extension(format!("json.{}", self.pid));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, file)
    }

    /// The endpoint in `file`, when it names a live `greffon serve` (a
    /// file left by a killed server may name a pid now reused).
    pub fn read_live(file: &Path) -> Option<Endpoint> {
        let text = std::fs::read(file).ok()?;
        let e: Endpoint = serde_json::from_slice(&text).ok()?;
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", e.pid)).ok()?;
        let serving = cmdline.split(|&b| b == 0).any(|arg| arg == b"serve");
        serving.then_some(e)
    }

    /// Removes `file` if it is still this server's (a newer server may
    /// have replaced it).
    pub(crate) fn remove_if_ours(file: &Path, pid: u32) {
        let ours = std::fs::read(file)
            .ok()
            .and_then(|t| serde_json::from_slice::<Endpoint>(&t).ok())
            .is_some_and(|e| e.pid == pid);
        if ours {
            let _ = std::fs::remove_file(file);
        }
    }
}
