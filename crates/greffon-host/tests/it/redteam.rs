//! The red-team suite: a malicious plugin (`tests/redteam/attempts.py`)
//! tries every escape listed in docs/security.md inside real sandboxed
//! workers, with the permission absent and, where it applies, present but
//! scoped. Each test asserts the specific denial (errno or error text), that
//! nothing outside changed, and that the host still answers a normal call
//! afterwards. The HTTP allowlist table is in `crates/greffon/tests/it/broker.rs`,
//! the kernel-downgrade refusal in `crates/greffon/tests/it/sandbox.rs`.

use crate::common;

use common::gone_within;

use greffon_core::Config;
use greffon_host::Host;
use greffon_protocol::ErrorKind;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ATTEMPTS: &str = include_str!("../../../../tests/redteam/attempts.py");
const SECRET: &str = "top secret";

/// A home with malicious plugins, and a folder outside it holding a secret.
struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    host: Host,
}

fn plugin_source(name: &str, permissions: &[&str], extra: Value) -> String {
    let mut meta = json!({
        "name": name,
        "permissions": permissions,
        "timeout": 20,
        "inputs": {"schema": {
            "type": "object",
            "properties": {"attempt": {"type": "string"}},
            "required": ["attempt"],
        }},
    });
    if let (Some(m), Value::Object(extra)) = (meta.as_object_mut(), extra) {
        m.extend(extra);
    }
    ATTEMPTS.replace(
        "META = {}  # replaced by the test",
        &format!("META = __import__('json').loads(r'''{meta}''')"),
    )
}

fn write_plugin(root: &Path, name: &str, permissions: &[&str], extra: Value) {
    let dir = root.join("plugins").join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("plugin.py"),
        plugin_source(name, permissions, extra),
    )
    .expect("write plugin");
}

async fn lab(plugins: &[(&str, &[&str], Value)], config: &str) -> Lab {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().canonicalize().expect("canonical");
    let root = base.join("home");
    let outside = base.join("outside");
    std::fs::create_dir_all(outside.join("dir")).expect("mkdir");
    std::fs::write(outside.join("secret.txt"), SECRET).expect("secret");
    std::fs::create_dir_all(root.join("data/other")).expect("mkdir");
    std::fs::write(root.join("data/other/secret.txt"), SECRET).expect("secret");
    std::fs::create_dir_all(root.join("app")).expect("mkdir");
    std::fs::write(root.join("app/token"), SECRET).expect("token");
    // The secret store as `greffon secret set` leaves it: mode 0600, which
    // does not stop a worker (same user); only the sandbox does.
    std::fs::write(root.join("app/secrets.json"), SECRET).expect("store");
    std::fs::set_permissions(
        root.join("app/secrets.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::write(root.join("greffon.toml"), config).expect("config");
    for (name, perms, extra) in plugins {
        write_plugin(&root, name, perms, extra.clone());
    }
    let config = Config::parse(config, Path::new("greffon.toml")).expect("config");
    let host = Host::open_with(&root, config).await.expect("host opens");
    for (name, _, _) in plugins {
        host.enable(name).await.expect("enable");
    }
    Lab {
        _tmp: tmp,
        root,
        outside,
        host,
    }
}

impl Lab {
    async fn try_(&self, plugin: &str, attempt: &str, args: Value) -> Value {
        let mut args = args;
        args["attempt"] = json!(attempt);
        match self.host.call(plugin, args).await {
            Ok(v) => v,
            Err(e) => panic!("{plugin}/{attempt}: call failed: {}", e.message),
        }
    }

    /// Asserts the attempt was refused with one of `errnos`, then that the
    /// plugin still answers a normal call.
    async fn denied(&self, plugin: &str, attempt: &str, args: Value, errnos: &[&str]) {
        let v = self.try_(plugin, attempt, args.clone()).await;
        assert_eq!(
            v["ok"],
            json!(false),
            "{plugin}/{attempt} {args} went through: {v}"
        );
        let errno = v["errno"].as_str().unwrap_or("");
        assert!(
            errnos.contains(&errno),
            "{plugin}/{attempt} {args}: expected {errnos:?}, got {v}"
        );
        self.serves(plugin).await;
    }

    async fn allowed(&self, plugin: &str, attempt: &str, args: Value) -> Value {
        let v = self.try_(plugin, attempt, args.clone()).await;
        assert_eq!(
            v["ok"],
            json!(true),
            "{plugin}/{attempt} {args} refused: {v}"
        );
        v
    }

    /// The error of an enable that must fail.
    async fn refused_enable(&self, plugin: &str) -> String {
        match self.host.enable(plugin).await {
            Ok(_) => panic!("enabling {plugin} was not refused"),
            Err(e) => e.to_string(),
        }
    }

    async fn serves(&self, plugin: &str) {
        let v = self
            .host
            .call(plugin, json!({"attempt": "ping"}))
            .await
            .unwrap_or_else(|e| panic!("{plugin} no longer answers: {}", e.message));
        assert_eq!(v["ok"], json!(true), "{v}");
    }

    fn p(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn out(&self, rel: &str) -> String {
        self.outside.join(rel).display().to_string()
    }

    fn secret_intact(&self) {
        let s =
            std::fs::read_to_string(self.outside.join("secret.txt")).expect("secret still there");
        assert_eq!(s, SECRET);
        assert!(self.outside.join("dir").is_dir());
    }
}

fn python() -> String {
    std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The interpreter's site-packages, where a `.pth` would run at every start.
fn site_packages() -> String {
    let out = std::process::Command::new(python())
        .args([
            "-I",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("python runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const NONE: &[&str] = &[];
const FS: &[&str] = &["fs_read", "fs_write"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_outside_the_grant_are_refused() {
    let lab = lab(&[("none", NONE, json!({})), ("fs", FS, json!({}))], "").await;
    let home_probe = format!(
        "{}/.greffon-redteam-probe",
        std::env::var("HOME").unwrap_or_else(|_| "/root".into())
    );
    for plugin in ["none", "fs"] {
        // §12.1 read outside scope.
        for path in [
            "/etc/shadow".to_string(),
            lab.out("secret.txt"),
            lab.p("greffon.toml"),
            lab.p("app/token"),
            lab.p("app/secrets.json"),
            lab.p("data/other/secret.txt"),
        ] {
            lab.denied(plugin, "read", json!({"path": path}), &["EACCES"])
                .await;
        }
        // §12.2 write and delete outside scope.
        for (attempt, path) in [
            ("write", lab.out("new.txt")),
            ("write", lab.out("secret.txt")),
            ("truncate", lab.out("secret.txt")),
            ("open_trunc", lab.out("secret.txt")),
            ("unlink", lab.out("secret.txt")),
            ("rmdir", lab.out("dir")),
            ("mkdir", lab.out("newdir")),
        ] {
            lab.denied(plugin, attempt, json!({"path": path}), &["EACCES"])
                .await;
        }
        // §12.6 persistence and code injection.
        for path in [
            format!("{}/evil.pth", site_packages()),
            lab.p(&format!("plugins/{plugin}/plugin.py")),
            lab.p("plugins/other.py"),
            home_probe.clone(),
        ] {
            lab.denied(plugin, "write", json!({"path": path}), &["EACCES"])
                .await;
        }
    }
    // The scoped grant works where it should: fs reads and writes its data
    // folder; none has no data folder at all.
    lab.allowed("fs", "write", json!({"path": lab.p("data/fs/own.txt")}))
        .await;
    lab.allowed("fs", "read", json!({"path": lab.p("data/fs/own.txt")}))
        .await;
    lab.denied(
        "none",
        "write",
        json!({"path": lab.p("data/none/x")}),
        &["EACCES", "ENOENT"],
    )
    .await;
    lab.secret_intact();
    assert!(!lab.outside.join("new.txt").exists());
    assert!(!lab.outside.join("newdir").exists());
    assert!(!Path::new(&home_probe).exists());
    assert!(!Path::new(&format!("{}/evil.pth", site_packages())).exists());
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_renames_and_metadata_do_not_cross_the_boundary() {
    let lab = lab(&[("fs", FS, json!({}))], "").await;
    let secret = lab.out("secret.txt");
    // §12.3a a symlink inside the writable folder pointing outside.
    lab.denied(
        "fs",
        "symlink_write",
        json!({"path": secret, "link": lab.p("data/fs/link")}),
        &["EACCES"],
    )
    .await;
    // §12.4 hard links and renames across the boundary.
    lab.denied(
        "fs",
        "hardlink",
        json!({"path": secret, "link": lab.p("data/fs/hl")}),
        &["EXDEV", "EACCES"],
    )
    .await;
    lab.allowed("fs", "write", json!({"path": lab.p("data/fs/mine")}))
        .await;
    lab.denied(
        "fs",
        "rename",
        json!({"path": lab.p("data/fs/mine"), "target": lab.out("mine")}),
        &["EXDEV", "EACCES"],
    )
    .await;
    lab.denied(
        "fs",
        "exchange",
        json!({"path": lab.p("data/fs/mine"), "target": secret}),
        &["EXDEV", "EACCES"],
    )
    .await;
    // §12.5 metadata: Landlock does not govern it, seccomp does.
    for attempt in ["chmod", "chown", "utime", "setxattr"] {
        lab.denied("fs", attempt, json!({"path": secret}), &["EPERM"])
            .await;
    }
    lab.secret_intact();
    assert!(!lab.outside.join("mine").exists());
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_paths_through_symlinks_are_refused_before_any_grant() {
    let lab = lab(
        &[(
            "box",
            &["fs_write"],
            json!({"paths": {"write": ["data/box"]}}),
        )],
        "",
    )
    .await;
    lab.allowed("box", "write", json!({"path": lab.p("data/box/f")}))
        .await;
    lab.host.disable("box").await.expect("disable");
    // §12.3b between two runs, the granted folder becomes a symlink.
    std::fs::remove_dir_all(lab.root.join("data/box")).expect("rm");
    std::os::unix::fs::symlink(&lab.outside, lab.root.join("data/box")).expect("symlink");
    let e = lab.refused_enable("box").await;
    assert!(e.contains("goes through a symlink"), "{e}");
    assert!(e.contains("data/box"), "{e}");
    std::fs::remove_file(lab.root.join("data/box")).expect("rm symlink");
    // §12.17 a declared path that is a symlink to /.
    std::os::unix::fs::symlink("/", lab.root.join("data/rootlink")).expect("symlink");
    write_plugin(
        &lab.root,
        "box",
        &["fs_read"],
        json!({"paths": {"read": ["data/rootlink"]}}),
    );
    let e = lab.refused_enable("box").await;
    assert!(e.contains("goes through a symlink"), "{e}");
    // Protected targets are named with the reason.
    for (paths, why) in [
        (
            json!({"write": ["/"]}),
            "'/' cannot be granted for write: it is the root folder",
        ),
        (json!({"write": ["plugins"]}), "the plugins' code"),
        (json!({"write": ["."]}), "it is the greffon home"),
        (json!({"read": ["app"]}), "greffon's own state"),
        (
            json!({"read": ["app/secrets.json"]}),
            "cannot be granted for read",
        ),
        (json!({"read": ["greffon.toml"]}), "greffon's configuration"),
        (json!({"write": ["data/../app"]}), "'..'"),
    ] {
        write_plugin(
            &lab.root,
            "box",
            &["fs_read", "fs_write"],
            json!({"paths": paths}),
        );
        let e = lab.refused_enable("box").await;
        assert!(e.contains(why), "{paths}: {e}");
    }
    lab.secret_intact();
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_of_any_family_and_no_io_uring() {
    let lab = lab(
        &[
            ("none", NONE, json!({})),
            (
                "net",
                &["net"],
                json!({"allowlist_domains": ["example.com"]}),
            ),
        ],
        "",
    )
    .await;
    for plugin in ["none", "net"] {
        // §12.7 raw network, whatever the family.
        for (family, kind) in [
            ("AF_INET", "stream"),
            ("AF_INET", "dgram"),
            ("AF_INET6", "stream"),
            ("AF_PACKET", "raw"),
            ("AF_NETLINK", "raw"),
            ("AF_VSOCK", "stream"),
            ("AF_UNIX", "stream"),
            ("AF_UNIX", "dgram"),
        ] {
            lab.denied(
                plugin,
                "raw_socket",
                json!({"family": family, "kind": kind}),
                &["EPERM"],
            )
            .await;
        }
        // asyncio's self-pipe still works; other socketpairs do not.
        lab.allowed(plugin, "socketpair", json!({"kind": "stream"}))
            .await;
        lab.denied(plugin, "socketpair", json!({"kind": "dgram"}), &["EPERM"])
            .await;
        // §12.8 io_uring (it opens sockets without socket()).
        lab.denied(
            plugin,
            "syscall",
            json!({"name": "io_uring_setup", "args": [1, 0]}),
            &["EPERM"],
        )
        .await;
    }
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_and_exec_need_the_process_permission() {
    let lab = lab(
        &[
            ("none", NONE, json!({})),
            ("proc", &["process", "fs_write"], json!({})),
        ],
        "",
    )
    .await;
    // §12.11 process creation without `process`: threads still work.
    for attempt in ["fork", "subprocess_run", "multiprocess", "posix_spawn"] {
        lab.denied("none", attempt, json!({}), &["EPERM"]).await;
    }
    for name in ["fork", "vfork"] {
        lab.denied("none", "syscall", json!({"name": name}), &["EPERM"])
            .await;
    }
    // clone(SIGCHLD): a new process; clone3 answers ENOSYS so glibc falls
    // back to clone, whose flags seccomp can read.
    lab.denied(
        "none",
        "syscall",
        json!({"name": "clone", "args": [17, 0, 0, 0, 0]}),
        &["EPERM"],
    )
    .await;
    lab.denied(
        "none",
        "syscall",
        json!({"name": "clone3", "args": [0, 0]}),
        &["ENOSYS"],
    )
    .await;
    let t = lab.allowed("none", "threads", json!({"count": 8})).await;
    assert_eq!(t["value"], json!(8));
    // §12.12 exec tricks without `process`.
    lab.denied("none", "execv", json!({}), &["EPERM"]).await;
    lab.denied(
        "none",
        "execv",
        json!({"path": "/lib64/ld-linux-x86-64.so.2", "argv": ["ld", "/bin/true"]}),
        &["EPERM"],
    )
    .await;
    lab.denied("none", "memfd_exec", json!({}), &["EPERM"])
        .await;
    lab.denied(
        "none",
        "syscall",
        json!({"name": "execveat", "args": [-100, 0, 0, 0, 0]}),
        &["EPERM"],
    )
    .await;

    // With `process`: programs run, but without privileges, still inside
    // the file rules, and still in the killable group.
    let r = lab
        .allowed("proc", "subprocess_run", json!({"argv": ["/bin/true"]}))
        .await;
    assert_eq!(r["value"], json!(0));
    let facts = lab.allowed("proc", "child_facts", json!({})).await;
    assert_eq!(
        facts["value"],
        json!("1 0 0"),
        "child: no_new_privs=1, no capabilities"
    );
    lab.denied(
        "proc",
        "create_exec",
        json!({"path": lab.p("data/proc/evil")}),
        &["EACCES"],
    )
    .await;
    lab.denied("proc", "read", json!({"path": "/etc/shadow"}), &["EACCES"])
        .await;
    lab.denied("proc", "escape_group", json!({}), &["EPERM"])
        .await;
    lab.denied(
        "proc",
        "syscall",
        json!({"name": "unshare", "args": [0x1000_0000]}),
        &["EPERM"],
    )
    .await;
    let sleepers = lab
        .allowed("proc", "spawn_sleepers", json!({"count": 3}))
        .await;
    lab.host.disable("proc").await.expect("disable");
    for pid in sleepers["pids"].as_array().expect("pids") {
        let pid = pid.as_i64().expect("pid");
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = state
            .rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'));
        assert!(!running, "child {pid} outlived its plugin: {state}");
    }
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_attack_surface_is_closed_with_and_without_process() {
    let lab = lab(
        &[("none", NONE, json!({})), ("proc", &["process"], json!({}))],
        "",
    )
    .await;
    // §12.13 namespaces and the kernel's wider surface; §12 baseline.
    let calls: &[(&str, Value)] = &[
        ("unshare", json!([0x1000_0000 | 0x4000_0000])),
        ("setns", json!([0, 0])),
        ("mount", json!([0, 0, 0, 0, 0])),
        ("pivot_root", json!([0, 0])),
        ("chroot", json!([0])),
        ("bpf", json!([0, 0, 0])),
        ("perf_event_open", json!([0, 0, -1, -1, 0])),
        ("userfaultfd", json!([0])),
        ("keyctl", json!([0, 0, 0, 0, 0])),
        ("name_to_handle_at", json!([-100, 0, 0, 0, 0])),
        ("open_by_handle_at", json!([-100, 0, 0])),
        ("ptrace", json!([16, 1, 0, 0])),
        ("process_vm_readv", json!([1, 0, 0, 0, 0, 0])),
        ("init_module", json!([0, 0, 0])),
        ("reboot", json!([0, 0, 0, 0])),
        ("setsid", json!([])),
    ];
    for plugin in ["none", "proc"] {
        for (name, args) in calls {
            lab.denied(
                plugin,
                "syscall",
                json!({"name": name, "args": args}),
                &["EPERM"],
            )
            .await;
        }
        // Landlock's signal scope: no signal to the host, even same uid.
        lab.denied(plugin, "kill_parent", json!({}), &["EPERM"])
            .await;
        // §12.14 terminal injection: no terminal, and the ioctl is filtered.
        lab.denied(plugin, "tiocsti", json!({}), &["EPERM", "ENOTTY"])
            .await;
        // No privilege, nothing of the host's environment, no stray fd.
        let facts = lab.allowed(plugin, "self_facts", json!({})).await;
        assert_eq!(facts["no_new_privs"], json!(1), "{facts}");
        assert_eq!(facts["cap_effective"], json!(0), "{facts}");
        assert_eq!(facts["cap_permitted"], json!(0), "{facts}");
        let env: Vec<&str> = facts["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            env,
            ["HOME", "LC_ALL", "MALLOC_ARENA_MAX", "PATH", "TMPDIR"],
            "{facts}"
        );
    }
    lab.host.shutdown().await;
}

/// The parent of process `pid` and its command line, read from /proc.
/// The plugin's worker is this process's child: exec'd, not forked from
/// a template.
async fn assert_started_with_exec(host: &Host, plugin: &str) {
    let pid = host.worker_pid(plugin).await.expect("runs");
    assert_eq!(
        parent_of(pid).0,
        std::process::id() as i32,
        "{plugin}: started with exec"
    );
}

fn parent_of(pid: i32) -> (i32, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let ppid = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ppid");
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).expect("cmdline");
    (ppid, String::from_utf8_lossy(&cmdline).replace('\0', " "))
}

/// The descriptors process `pid` holds open.
fn fds_of(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd list")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// Workers are forked from the interpreter's template process (which has
/// imported the SDK), and each then holds only what a worker started with
/// exec holds: its five descriptors (none of the template's control
/// socket, none of a sibling's channels), no capability, its own grant
/// only — a sibling's data folder stays closed to it. The template keeps
/// nothing of the workers it forked; killed, it takes its workers along
/// and is started again at the next call. With `sandbox = "off"` workers
/// are started with exec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_worker_holds_no_grant_of_the_template_nor_of_a_sibling() {
    let lab = lab(&[("sibling", FS, json!({})), ("reader", FS, json!({}))], "").await;
    std::fs::create_dir_all(lab.root.join("data/sibling")).expect("mkdir");
    std::fs::write(lab.root.join("data/sibling/secret.txt"), SECRET).expect("secret");
    let sibling = lab.host.worker_pid("sibling").await.expect("sibling runs");
    let reader = lab.host.worker_pid("reader").await.expect("reader runs");
    let (template, cmdline) = parent_of(reader);
    assert!(cmdline.contains("greffon.template"), "{cmdline}");
    assert_eq!(parent_of(sibling).0, template, "one template forks both");
    assert_ne!(template, std::process::id() as i32);
    assert_eq!(
        fds_of(template),
        [0, 1, 2, 3],
        "the template keeps only its control socket"
    );
    let v = lab.allowed("reader", "open_fds", json!({})).await;
    assert_eq!(v["fds"], json!([]), "{v}");
    let facts = lab.allowed("reader", "self_facts", json!({})).await;
    assert_eq!(
        (
            facts["cap_effective"].clone(),
            facts["no_new_privs"].clone()
        ),
        (json!(0), json!(1)),
        "{facts}"
    );
    let secret = lab.p("data/sibling/secret.txt");
    lab.denied("reader", "read", json!({"path": secret}), &["EACCES"])
        .await;
    lab.allowed(
        "sibling",
        "read",
        json!({"path": lab.p("data/sibling/secret.txt")}),
    )
    .await;
    // A dead template takes its workers with it (their parent-death
    // signal); the next call starts a new template and a new worker.
    // SAFETY: plain syscall on the template this test's host started.
    unsafe {
        libc::kill(template, libc::SIGKILL);
    }
    assert!(
        gone_within(i64::from(reader), Duration::from_secs(10)).await,
        "the worker outlived its template"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lab.host.worker_pids("reader").contains(&reader) {
        assert!(
            std::time::Instant::now() < deadline,
            "the host never saw its worker go"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lab.serves("reader").await;
    let again = lab.host.worker_pid("reader").await.expect("a new worker");
    assert_ne!(parent_of(again).0, template, "a new template");
    lab.host.shutdown().await;

    let off = self::lab(&[("plain", NONE, json!({}))], "sandbox = \"off\"\n").await;
    assert_started_with_exec(&off.host, "plain").await;
    off.host.shutdown().await;
}

/// A template that cannot start (here a broken `template.py` in the SDK)
/// costs the speed, not the plugin: workers are started with exec, in the
/// same sandbox. `worker_template = false` asks for exec outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_template_workers_are_started_with_exec() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical");
    write_plugin(&root, "none", NONE, json!({}));
    let config = Config::default();
    let sdk = greffon_worker::sdk::materialize(&greffon_core::Home::new(&root, &config).sdk_root())
        .expect("sdk");
    std::fs::write(sdk.join("greffon/template.py"), "import sys\nsys.exit(3)\n").expect("break it");
    let host = Host::open_with(&root, config).await.expect("host opens");
    host.enable("none")
        .await
        .expect("enabled without a template");
    let v = host
        .call("none", json!({"attempt": "self_facts"}))
        .await
        .expect("serves");
    assert_eq!(
        (v["no_new_privs"].clone(), v["cap_effective"].clone()),
        (json!(1), json!(0)),
        "{v}"
    );
    assert_started_with_exec(&host, "none").await;
    host.shutdown().await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical");
    write_plugin(&root, "none", NONE, json!({}));
    let config =
        Config::parse("worker_template = false\n", Path::new("greffon.toml")).expect("config");
    let host = Host::open_with(&root, config).await.expect("host opens");
    host.enable("none").await.expect("enabled");
    assert_started_with_exec(&host, "none").await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_cannot_be_lifted_from_inside() {
    let lab = lab(&[("none", NONE, json!({}))], "").await;
    // §12.15: new layers may only add restrictions.
    lab.denied("none", "undo_nnp", json!({}), &["EINVAL"]).await;
    let v = lab.try_("none", "permissive_seccomp", json!({})).await;
    assert_eq!(v["socket_after"]["errno"], json!("EPERM"), "{v}");
    assert_eq!(v["read_after"]["errno"], json!("EACCES"), "{v}");
    let v = lab.try_("none", "empty_landlock", json!({})).await;
    assert_eq!(v["read_after"]["errno"], json!("EACCES"), "{v}");
    lab.serves("none").await;
    // Strict mode would leave only read, write and exit: the kernel refuses
    // to switch a filtered process to it.
    lab.denied("none", "strict_seccomp", json!({}), &["EINVAL", "EBUSY"])
        .await;
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_to_the_host_cannot_be_abused() {
    let lab = lab(&[("none", NONE, json!({}))], "").await;
    // §12.9 oversized and malformed frames: the worker is dropped, the host
    // stays up.
    for attempt in ["garbage_frame", "bad_json_frame"] {
        let e = lab
            .host
            .call("none", json!({"attempt": attempt}))
            .await
            .expect_err("worker dropped");
        assert_eq!(e.kind, ErrorKind::WorkerCrashed, "{attempt}: {}", e.message);
        assert!(e.message.contains("broke the protocol"), "{}", e.message);
        lab.serves("none").await;
    }
    // A descriptor sent to the host is refused by the kernel.
    lab.denied("none", "pass_fd", json!({}), &["EPERM"]).await;
    // A host service the plugin was not granted.
    let v = lab.try_("none", "http_without_net", json!({})).await;
    assert_eq!(v["errno"], json!("PermissionError"), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("no 'net' permission"),
        "{v}"
    );
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhaustion_ends_in_the_worker_not_the_host() {
    let config = "kill_grace_s = 0.5\n\
        [plugins.res]\ntimeout_s = 1\nmemory_mb = 300\nmax_open_files = 64\nmax_file_mb = 8\n\
        [plugins.cpu]\ncpu_s = 1\n";
    let lab = lab(
        &[("res", &["fs_write"], json!({})), ("cpu", NONE, json!({}))],
        config,
    )
    .await;
    // §12.16.
    let v = lab.try_("res", "thread_bomb", json!({})).await;
    assert_eq!(v["errno"], json!("RuntimeError"), "{v}");
    lab.serves("res").await;
    lab.denied(
        "res",
        "big_alloc",
        json!({"mb": 50 * 1024}),
        &["MemoryError"],
    )
    .await;
    let v = lab.try_("res", "fd_exhaust", json!({})).await;
    assert_eq!(v["errno"], json!("EMFILE"), "{v}");
    assert!(v["opened"].as_u64().unwrap_or(999) < 64, "{v}");
    lab.serves("res").await;
    lab.denied(
        "res",
        "big_file",
        json!({"path": lab.p("data/res/big"), "mb": 64}),
        &["EFBIG"],
    )
    .await;
    let size = std::fs::metadata(lab.root.join("data/res/big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size <= 8 << 20, "file grew to {size} bytes");
    // Wall clock: a busy loop and a sleep are cut at the call's timeout,
    // and the stuck worker is killed after its grace.
    for attempt in ["busy", "sleep_forever"] {
        let pid = lab.allowed("res", "ping", json!({})).await["pid"]
            .as_i64()
            .expect("pid");
        let e = lab
            .host
            .call("res", json!({"attempt": attempt}))
            .await
            .expect_err("timed out");
        assert_eq!(e.kind, ErrorKind::Timeout, "{attempt}: {}", e.message);
        assert!(
            gone_within(pid, Duration::from_secs(10)).await,
            "worker {pid} was not killed"
        );
        let again = lab.allowed("res", "ping", json!({})).await;
        assert_ne!(again["pid"], json!(pid), "{again}");
    }
    // CPU time: the kernel stops a worker past its cpu_s.
    let e = lab
        .host
        .call("cpu", json!({"attempt": "busy"}))
        .await
        .expect_err("killed");
    assert_eq!(e.kind, ErrorKind::WorkerCrashed, "{}", e.message);
    assert!(
        e.message.contains("SIGXCPU") || e.message.contains("SIGKILL"),
        "{}",
        e.message
    );
    lab.serves("cpu").await;
    lab.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_imports_with_no_permission_at_all() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical");
    std::fs::create_dir_all(root.join("data/d")).expect("mkdir");
    std::fs::write(root.join("data/d/f"), "x").expect("write");
    let dir = root.join("plugins/d");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The import reads the plugin's data folder and says how it went in
    // its description.
    std::fs::write(
        dir.join("plugin.py"),
        format!(
            "import os\ntry:\n    open({:?}).read()\n    SEEN = 'read'\nexcept PermissionError:\n    SEEN = 'denied'\n\
             class P:\n    meta = {{'name': 'd', 'description': SEEN, 'permissions': ['fs_read']}}\n    def run(self):\n        return SEEN\nplugin = P()\n",
            root.join("data/d/f").display().to_string()
        ),
    )
    .expect("write");
    let host = Host::open_with(&root, Config::default())
        .await
        .expect("open");
    assert_eq!(host.plugin("d").expect("d").description, "denied");
    host.enable("d").await.expect("enable");
    assert_eq!(
        host.call("d", json!({})).await.expect("call"),
        json!("read")
    );
    host.shutdown().await;
}
