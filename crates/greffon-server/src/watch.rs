//! Applying changes under `plugins/` while serving: a file watcher with a
//! debounce, then `Host::sync_folder` for each folder touched.

use greffon_host::Host;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before acting: an editor's save is
/// several events (write, rename, chmod), a `git checkout` many.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The folder of `plugins/` an event path belongs to.
fn folder_of(plugins: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(plugins).ok()?;
    let first = rel.components().next()?;
    first.as_os_str().to_str().map(str::to_string)
}

/// Whether an event may mean a file changed. Opening or reading one does
/// not: the reload reads `plugin.py`, and counting that as a change
/// reloaded an enabled plugin every debounce period, for ever. Closing a
/// file opened for writing does.
fn changes_files(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `plugins` for the life of the returned guard, syncing each
/// changed folder with `host`.
pub fn spawn(host: Host, plugins: PathBuf) -> notify::Result<notify::RecommendedWatcher> {
    std::fs::create_dir_all(&plugins).map_err(notify::Error::io)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && changes_files(&event.kind)
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    watcher.watch(&plugins, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut folders = BTreeSet::new();
            folders.extend(folder_of(&plugins, &first));
            // Gather everything until the tree has been quiet for a while.
            while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                folders.extend(folder_of(&plugins, &path));
            }
            for folder in folders {
                match host.sync_folder(&folder).await {
                    Ok(done) => tracing::info!(target: "server", folder = %folder, "{done}"),
                    Err(e) => tracing::warn!(target: "server", folder = %folder, "{e}"),
                }
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_file_is_not_a_change() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        assert!(!changes_files(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_files(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_files(&EventKind::Create(CreateKind::File)));
        assert!(changes_files(&EventKind::Remove(
            notify::event::RemoveKind::Any
        )));
    }

    #[test]
    fn events_map_to_their_plugin_folder() {
        let p = Path::new("/h/plugins");
        assert_eq!(
            folder_of(p, Path::new("/h/plugins/w/plugin.py")),
            Some("w".into())
        );
        assert_eq!(folder_of(p, Path::new("/h/plugins/w")), Some("w".into()));
        assert_eq!(folder_of(p, Path::new("/h/plugins")), None);
        assert_eq!(folder_of(p, Path::new("/elsewhere/x")), None);
    }
}
