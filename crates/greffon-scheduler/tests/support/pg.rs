//! A throwaway PostgreSQL server for tests and benches: the distribution's
//! `initdb` and `pg_ctl` into a temporary folder, on a free loopback port,
//! with password authentication. As root, the server runs as the
//! `postgres` user (PostgreSQL refuses to run as root).
//!
//! Where PostgreSQL is not installed, [`TempPostgres::start`] answers
//! `None` after a loud message, unless `CI` is set: there it panics, since
//! `scripts/build-deps` installs it and CI must not skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The password every throwaway server's `greffon` role has: tests check
/// that it never reaches a log.
pub const PASSWORD: &str = "pg-Secret-7f3a9c";

pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The folder holding `initdb` and `pg_ctl`: on PATH, else Debian's
/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TempPostgres {
    /// A new cluster, started; `None` (after saying so) where PostgreSQL
    /// cannot be found outside CI.
    pub fn start() -> Option<TempPostgres> {
        let Some(bin) = bin_dir() else {
            let message = "PostgreSQL (initdb, pg_ctl) is not installed: run scripts/build-deps \
                           (apt-get install postgresql)";
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("\n*** SKIPPED: {message} ***\n");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("greffon-pg")
            .tempdir()
            .expect("tempdir");
        let pg = TempPostgres {
            dir,
            bin,
            port: free_port(),
        };
        std::fs::write(pg.dir.path().join("pw"), PASSWORD).expect("password file");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(pg.dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown to postgres");
        }
        let data = pg.data();
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "greffon",
                "--auth=scram-sha-256",
                "--pwfile",
                path_str(&pg.dir.path().join("pw")),
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.start_server();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs, as `postgres` when root.
    /// One of the server's programs with `args`, as `postgres` when root.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs one of the server's programs, which must succeed.
    fn as_postgres(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-o",
                &options,
                "-l",
                path_str(&log),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server as a restart would (`fast`: sessions are cut).
    pub fn stop_server(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", path_str(&self.data()), "-m", "fast", "-w", "stop"],
        );
    }

    /// `postgres://greffon:PASSWORD@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://greffon:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The server's main process, from its `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "immediate", "stop"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
