//! The greffon home: where plugins, data, logs and the database live.

use crate::config::Config;
use std::path::{Path, PathBuf};

/// A resolved home directory and the layout inside it.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    logs_dir: PathBuf,
}

impl Home {
    /// `--home DIR` > `GREFFON_HOME` > the current directory when it holds
    /// `greffon.toml` or `plugins/` > `$XDG_DATA_HOME/greffon` (or
    /// `~/.local/share/greffon`).
    pub fn resolve(flag: Option<&Path>) -> PathBuf {
        Self::resolve_with(
            flag,
            std::env::var_os("GREFFON_HOME").map(PathBuf::from),
            std::env::current_dir().ok(),
            std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }

    fn resolve_with(
        flag: Option<&Path>,
        env: Option<PathBuf>,
        cwd: Option<PathBuf>,
        xdg: Option<PathBuf>,
        user_home: Option<PathBuf>,
    ) -> PathBuf {
        if let Some(dir) = flag {
            return dir.to_path_buf();
        }
        if let Some(dir) = env.filter(|d| !d.as_os_str().is_empty()) {
            return dir;
        }
        if let Some(cwd) =
            cwd.filter(|d| d.join("greffon.toml").is_file() || d.join("plugins").is_dir())
        {
            return cwd;
        }
        let data = xdg
            .filter(|d| d.is_absolute())
            .or_else(|| user_home.map(|h| h.join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("greffon")
    }

    /// Lays out a home rooted at `root` with `config`'s `logs_dir`. An
    /// existing root is made canonical: sandbox grants under it are opened
    /// refusing every symlink, so the root must not go through one.
    pub fn new(root: &Path, config: &Config) -> Home {
        let root = std::fs::canonicalize(root)
            .or_else(|_| std::path::absolute(root))
            .unwrap_or_else(|_| root.to_path_buf());
        let logs_dir = root.join(&config.logs_dir);
        Home { root, logs_dir }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_file(root: &Path) -> PathBuf {
        root.join("greffon.toml")
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// A plugin's own data folder (`data/<name>/`).
    pub fn data_dir(&self, plugin: &str) -> PathBuf {
        self.root.join("data").join(plugin)
    }

    pub fn logs_dir(&self) -> &Path {
        &self.logs_dir
    }

    /// Crash dumps (`<logs_dir>/plugins/`).
    pub fn dumps_dir(&self) -> PathBuf {
        self.logs_dir.join("plugins")
    }

    /// Plugins' Python environments (`envs/`), one folder per distinct
    /// set of requirements; workers only read them.
    pub fn envs_dir(&self) -> PathBuf {
        self.root.join("envs")
    }

    /// Local model files (`models/`), where `[llm] model` is looked up.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    pub fn db_file(&self) -> PathBuf {
        self.root.join("greffon.db")
    }

    /// greffon's own state: SDK, logs by default, temp folders, token.
    pub fn app_dir(&self) -> PathBuf {
        self.root.join("app")
    }

    /// The secret store's file (mode 0600), used when no OS keyring is:
    /// under `app/`, which no plugin may be granted.
    pub fn secrets_file(&self) -> PathBuf {
        self.app_dir().join("secrets.json")
    }

    /// Where the embedded Python SDK is materialized.
    pub fn sdk_root(&self) -> PathBuf {
        self.app_dir().join("sdk")
    }

    /// The workers' private temp folders.
    pub fn tmp_root(&self) -> PathBuf {
        self.app_dir().join("tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flag_env_cwd_data_dir() {
        let cwd = tempfile::tempdir().expect("tempdir");
        let flag = Path::new("/flag");
        let r = |f: Option<&Path>, env: Option<&str>| {
            Home::resolve_with(
                f,
                env.map(PathBuf::from),
                Some(cwd.path().to_path_buf()),
                Some(PathBuf::from("/xdg")),
                Some(PathBuf::from("/home/u")),
            )
        };
        assert_eq!(r(Some(flag), Some("/env")), PathBuf::from("/flag"));
        assert_eq!(r(None, Some("/env")), PathBuf::from("/env"));
        assert_eq!(r(None, None), PathBuf::from("/xdg/greffon"));
        std::fs::create_dir(cwd.path().join("plugins")).expect("mkdir");
        assert_eq!(r(None, None), cwd.path().to_path_buf());
    }

    #[test]
    fn data_dir_falls_back_to_local_share() {
        let dir = Home::resolve_with(None, None, None, None, Some(PathBuf::from("/home/u")));
        assert_eq!(dir, PathBuf::from("/home/u/.local/share/greffon"));
    }

    #[test]
    fn layout_follows_config() {
        let c = Config {
            logs_dir: PathBuf::from("var/log"),
            ..Config::default()
        };
        let h = Home::new(Path::new("/srv/g"), &c);
        assert_eq!(h.dumps_dir(), PathBuf::from("/srv/g/var/log/plugins"));
        assert_eq!(h.data_dir("w"), PathBuf::from("/srv/g/data/w"));
        assert_eq!(h.db_file(), PathBuf::from("/srv/g/greffon.db"));
    }
}
