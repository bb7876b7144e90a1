//! Installing greffon like a tool: completions, man pages, the systemd
//! user unit (against a stand-in `systemctl` that records its arguments:
//! the test machine has no user session bus), and the original
//! assistant's `python -m app.cli` run from a home.

use crate::common;

use common::TestHome;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn completions_are_generated_for_each_shell_from_the_grammar() {
    let home = TestHome::new();
    let bash = home.ok(&["completions", "bash"]);
    assert!(bash.contains("_greffon()"), "{bash}");
    // Subcommands and their own flags come from clap, not a hand list.
    assert!(bash.contains("scaffold") && bash.contains("--retry-backoff"));
    let zsh = home.ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef greffon"), "{zsh}");
    let fish = home.ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c greffon"), "{fish}");
    let out = home.greffon(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
    // Nothing of a home is created to print a script.
    assert!(!home.path().join("app").exists());
}

#[test]
fn man_pages_are_generated_for_the_command_and_each_subcommand() {
    let home = TestHome::new();
    let page = home.ok(&["man"]);
    assert!(page.contains(".TH greffon 1"), "{page}");
    assert!(
        page.contains("plugin") && page.contains("\\-\\-home"),
        "{page}"
    );
    let dir = home.path().join("man1");
    home.ok(&["man", "--dir", dir.to_str().expect("utf-8")]);
    for name in [
        "greffon.1",
        "greffon-plugin.1",
        "greffon-plugin-run.1",
        "greffon-task-create.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let title = format!(".TH {} 1", name.trim_end_matches(".1"));
        assert!(text.contains(&title), "{name}: {text}");
    }
    let run = std::fs::read_to_string(dir.join("greffon-plugin-run.1")).expect("page");
    assert!(run.contains("KEY=VALUE"), "{run}");
}

/// A `systemctl` that appends its arguments to `calls` and succeeds, or
/// fails for `disable` when `fail_disable`.
fn fake_systemctl(dir: &Path, fail_disable: bool) {
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\n{}exit 0\n",
        dir.join("calls").display(),
        if fail_disable {
            "case \"$*\" in *disable*) exit 1;; esac\n"
        } else {
            ""
        }
    );
    let path = dir.join("systemctl");
    std::fs::write(&path, script).expect("systemctl");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn service_env(bin: &Path, config: &Path) -> Vec<(String, String)> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("PATH".into(), path),
        ("XDG_CONFIG_HOME".into(), config.display().to_string()),
    ]
}

#[test]
fn service_install_writes_a_user_unit_and_enables_it() {
    let home = TestHome::new();
    let bin = tempfile::tempdir().expect("bin");
    let config = tempfile::tempdir().expect("config");
    fake_systemctl(bin.path(), false);
    let env = service_env(bin.path(), config.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let out = home.greffon_env(&["service", "install"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = config.path().join("systemd/user/greffon.service");
    let text = std::fs::read_to_string(&unit).expect("unit written");
    let exec = format!(
        "ExecStart=\"{}\" --home \"{}\" serve",
        env!("CARGO_BIN_EXE_greffon"),
        home.path().display()
    );
    assert!(text.contains(&exec), "{text}\nexpected {exec}");
    assert!(text.contains("WantedBy=default.target"), "{text}");
    let calls = std::fs::read_to_string(bin.path().join("calls")).expect("systemctl ran");
    assert_eq!(
        calls,
        "--user daemon-reload\n--user enable --now greffon.service\n"
    );

    // Uninstall tolerates a unit that was never enabled, and removes it.
    fake_systemctl(bin.path(), true);
    std::fs::remove_file(bin.path().join("calls")).expect("reset");
    let out = home.greffon_env(&["service", "uninstall"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: systemctl --user disable"));
    assert!(!unit.exists());
    let calls = std::fs::read_to_string(bin.path().join("calls")).expect("systemctl ran");
    assert_eq!(
        calls,
        "--user disable --now greffon.service\n--user daemon-reload\n"
    );
    let out = home.greffon_env(&["service", "uninstall"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to uninstall"));
}

#[test]
fn service_install_no_enable_only_writes_and_quotes_what_systemd_would_expand() {
    let base = tempfile::tempdir().expect("base");
    // A home whose path holds a space, `%` and `$`.
    let root = base.path().join("my home %h $USER");
    std::fs::create_dir_all(root.join("plugins")).expect("home");
    let bin = tempfile::tempdir().expect("bin");
    let config = tempfile::tempdir().expect("config");
    fake_systemctl(bin.path(), false);
    let out = Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(&root)
        .args(["service", "install", "--no-enable"])
        .envs(service_env(bin.path(), config.path()))
        .output()
        .expect("greffon runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!bin.path().join("calls").exists(), "systemctl must not run");
    let text = std::fs::read_to_string(config.path().join("systemd/user/greffon.service"))
        .expect("unit written");
    assert!(text.contains("--home \""), "{text}");
    assert!(text.contains("my home %%h $$USER\" serve"), "{text}");
}

#[test]
fn python_m_app_cli_runs_greffon_on_the_home() {
    let home = TestHome::new();
    home.ok(&["plugin", "list"]);
    let python = std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-m", "app.cli", "plugin", "scaffold", "hello"])
        .current_dir(home.path())
        .env_remove("GREFFON_HOME")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(home.path().join("plugins/hello/plugin.py").is_file());
    // From another folder it still names this home.
    let elsewhere = tempfile::tempdir().expect("elsewhere");
    let out = Command::new(&python)
        .arg(home.path().join("app/cli.py"))
        .args(["plugin", "list", "--json"])
        .current_dir(elsewhere.path())
        .output()
        .expect("python runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"hello\""),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
