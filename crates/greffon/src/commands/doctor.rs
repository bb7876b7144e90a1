//! `greffon doctor`: what plugins need, and whether this machine has it.

use crate::EXIT_ERROR;
use crate::print;
use greffon_core::{Config, Home, SandboxMode};
use serde_json::{Value, json};
use std::process::ExitCode;

/// What is wrong (`problems`: exit 1) and what only some plugins would
/// miss (`warnings`).
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    warnings: Vec<String>,
}

/// `greffon doctor`: what plugins need, and whether this machine has it.
/// Needs no home: it checks the interpreter, the kernel, the model and
/// where secrets would be kept.
pub(crate) async fn run(config: &Config, home: &Home, json_out: bool) -> ExitCode {
    let mut f = Findings::default();
    let python = match greffon_host::python_facts(config.python.path.as_deref()) {
        Ok((path, version)) => json!({"path": path, "version": version}),
        Err(e) => {
            f.problems.push(e);
            json!({"path": null, "version": null})
        }
    };
    // Only plugins that declare requirements need uv: a warning.
    let uv = match greffon_host::uv_facts(config) {
        Ok((path, version)) => json!({"path": path, "version": version}),
        Err(e) => {
            f.warnings.push(format!(
                "{e}; plugins that declare requirements cannot be enabled"
            ));
            json!({"path": null, "version": null})
        }
    };
    let sandbox = sandbox_report(config, &mut f);
    let llm = llm_report(config, home);
    if let Some(problem) = llm["problem"].as_str() {
        // Only the `llm` plugin and /v1/llm need the model.
        f.warnings.push(format!("llm: {problem}"));
    }
    let (location, keyring) = greffon_host::store_report(home, config.secrets.store).await;
    if config.secrets.store == greffon_core::SecretStoreKind::Keyring && !keyring {
        f.problems.push("[secrets] store = \"keyring\" but no Secret Service answers on the session bus; plugins cannot read their secrets".into());
    }
    let tasks = tasks_report(config, home, &mut f).await;
    let ok = f.problems.is_empty();
    let report = json!({
        "python": python,
        "uv": uv,
        "llm": llm,
        "tasks": tasks,
        "secrets": {
            "store": config.secrets.store,
            "keyring_available": keyring,
            "location": location,
        },
        "sandbox": sandbox,
        "problems": f.problems,
        "warnings": f.warnings,
        "ok": ok,
    });
    if json_out {
        print::json(&report);
    } else {
        print::doctor(&report);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR)
    }
}

/// What the kernel enforces for each worker, and what it cannot.
fn sandbox_report(config: &Config, f: &mut Findings) -> Value {
    let support = greffon_host::sandbox_support();
    let missing = support.missing();
    let enforce = config.sandbox == SandboxMode::Enforce;
    let mut protections: Vec<&str> = if enforce && missing.is_empty() {
        vec![
            "Landlock file system rules (read: runtime and plugin folder; write: own temp folder and granted paths)",
            "Landlock scopes (no signals or abstract UNIX sockets outside the worker)",
            "seccomp: no socket(), io_uring, ptrace, namespaces, mounts, bpf, chmod/chown/xattr, module or clock changes",
            "seccomp: no fork/exec/memfd unless `process` is granted",
            "no-new-privs, no capabilities, own session, cleared environment, stdin /dev/null",
            "rlimits (memory, CPU, open files, file size, no core dumps), parent-death signal",
        ]
    } else {
        Vec::new()
    };
    if support.refuse_passed_fds {
        protections.push("the channel to greffon refuses passed descriptors (SO_PASSRIGHTS)");
    } else {
        f.warnings.push("the kernel cannot refuse descriptors a worker sends to greffon (SO_PASSRIGHTS, Linux 6.16): such a worker only stalls its own calls until their timeout".to_string());
    }
    if enforce {
        f.problems.extend(
            missing
                .iter()
                .map(|m| format!("{m}; plugins will not start (sandbox = \"enforce\")")),
        );
    } else {
        f.warnings.push("sandbox = \"off\": plugins run WITHOUT kernel isolation; their permissions are not enforced".to_string());
        f.warnings.extend(missing);
        tracing::warn!(target: "audit", event = "sandbox_off", "doctor: plugins run without kernel isolation (sandbox = \"off\")");
    }
    json!({
        "mode": if enforce { "enforce" } else { "off" },
        "landlock_abi": support.landlock_abi,
        "landlock_abi_required": greffon_sandbox::LANDLOCK_ABI_REQUIRED,
        "seccomp": support.seccomp,
        "refuse_passed_fds": support.refuse_passed_fds,
        "protections": protections,
    })
}

/// The task store: the SQLite file, or the PostgreSQL database reached,
/// migrated, and every host's clock within the lease's margin.
async fn tasks_report(config: &Config, home: &Home, f: &mut Findings) -> Value {
    let Some(url) = config.scheduler.database_url() else {
        return json!({"store": "sqlite", "location": home.db_file()});
    };
    let report = match greffon_scheduler::PgTaskStore::inspect(&url).await {
        Ok(r) => r,
        Err(e) => {
            f.problems.push(format!("tasks: {e}"));
            return json!({"store": "postgres", "reachable": false});
        }
    };
    let (applied, known) = report.migrated;
    if applied < known {
        f.warnings.push(format!(
            "tasks: the database at {} has {applied} of {known} migrations; `greffon serve` applies them at start",
            report.location
        ));
    }
    // A renewal every third of the lease leaves two thirds of slack; two
    // hosts' clocks apart by more than a third eat into it.
    let margin_ms = (config.scheduler.lease_s * 1000.0 / 3.0) as i64;
    let mut skews: Vec<(String, i64)> = report.hosts.clone();
    skews.push(("this host".into(), report.skew_ms));
    let (min, max) = skews.iter().fold((i64::MAX, i64::MIN), |(lo, hi), (_, s)| {
        (lo.min(*s), hi.max(*s))
    });
    if max - min > margin_ms {
        f.problems.push(format!(
            "tasks: the hosts' clocks are {} ms apart (more than lease_s / 3 = {margin_ms} ms): a live host's runs could be taken for lost; synchronise the clocks (NTP) or raise [scheduler] lease_s",
            max - min
        ));
    }
    json!({
        "store": "postgres",
        "location": report.location,
        "reachable": true,
        "migrations": {"applied": applied, "known": known},
        "clock_skew_ms": report.skew_ms,
        "hosts": skews.iter().map(|(owner, skew)| json!({"owner": owner, "clock_skew_ms": skew})).collect::<Vec<_>>(),
    })
}

/// `[llm]` and whether its model is there and readable.
fn llm_report(config: &Config, home: &Home) -> Value {
    match config.llm.backend {
        greffon_core::LlmBackend::Openai => json!({
            "backend": "openai",
            "base_url": config.llm.base_url,
            "model": config.llm.api_model,
            "problem": null,
        }),
        greffon_core::LlmBackend::Llama => {
            let path = greffon_llm::model_path(home, &config.llm);
            let problem = if cfg!(feature = "llama") {
                greffon_llm::models::check(&path)
                    .err()
                    .map(|e| e.to_string())
            } else {
                Some(greffon_llm::LlmError::NotBuilt.to_string())
            };
            json!({"backend": "llama", "model": path, "problem": problem})
        }
    }
}
