//! The `system.info` host service: facts read from `/proc`, `/sys` and
//! `/etc` by the host, so plugins need no file-system permission for them.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
}

fn os_release(root: &Path) -> Value {
    let text = read(root, "etc/os-release")
        .or_else(|| read(root, "usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    json!({
        "name": field("PRETTY_NAME").or_else(|| field("NAME")),
        "id": field("ID"),
        "version": field("VERSION_ID"),
        "family": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

fn cpu(root: &Path) -> Value {
    let info = read(root, "proc/cpuinfo").unwrap_or_default();
    let mut model = None;
    let mut logical = 0u64;
    let mut cores = BTreeSet::new();
    let mut physical_id = String::new();
    for line in info.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => logical += 1,
            "model name" if model.is_none() => model = Some(value.to_string()),
            "physical id" => physical_id = value.to_string(),
            "core id" => {
                cores.insert((physical_id.clone(), value.to_string()));
            }
            _ => {}
        }
    }
    let load: Vec<f64> = read(root, "proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!({
        "model": model,
        "cores": if cores.is_empty() { logical } else { cores.len() as u64 },
        "logical": logical,
        "load": (load.len() == 3).then(|| json!({"1m": load[0], "5m": load[1], "15m": load[2]})),
    })
}

fn memory(root: &Path) -> Value {
    let info = read(root, "proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    json!({ "total_bytes": kib("MemTotal"), "available_bytes": kib("MemAvailable") })
}

fn vendor_name(id: &str) -> Option<&'static str> {
    Some(match id {
        "0x10de" => "NVIDIA",
        "0x1002" => "AMD",
        "0x8086" => "Intel",
        "0x1af4" => "Virtio",
        "0x1234" => "QEMU",
        "0x15ad" => "VMware",
        _ => return None,
    })
}

/// GPUs from DRM cards (`/sys/class/drm/cardN`) and, when the NVIDIA driver
/// is loaded, its model names; an empty list when there are none.
fn gpus(root: &Path) -> Value {
    let mut out = Vec::new();
    let drm = root.join("sys/class/drm");
    let mut cards: Vec<String> = std::fs::read_dir(&drm)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix("card").is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    cards.sort();
    for card in cards {
        let dev = drm.join(&card).join("device");
        let attr = |name: &str| {
            std::fs::read_to_string(dev.join(name))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let vendor = attr("vendor");
        let driver = std::fs::read_link(dev.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        out.push(json!({
            "card": card,
            "vendor": vendor,
            "vendor_name": vendor.as_deref().and_then(vendor_name),
            "device": attr("device"),
            "driver": driver,
        }));
    }
    let nvidia = root.join("proc/driver/nvidia/gpus");
    if let Ok(rd) = std::fs::read_dir(&nvidia) {
        let mut models: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
            .filter_map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
            })
            .collect();
        models.sort();
        for (i, model) in models.into_iter().enumerate() {
            out.push(json!({"card": format!("nvidia{i}"), "vendor_name": "NVIDIA", "model": model, "driver": "nvidia"}));
        }
    }
    Value::Array(out)
}

/// Gathers the facts under `root` (`/` in production).
pub(crate) fn gather(root: &Path, python_version: &str) -> Value {
    let trim = |s: Option<String>| s.map(|s| s.trim().to_string());
    json!({
        "os": os_release(root),
        "kernel": {
            "release": trim(read(root, "proc/sys/kernel/osrelease")),
            "version": trim(read(root, "proc/sys/kernel/version")),
        },
        "hostname": trim(read(root, "proc/sys/kernel/hostname")),
        "cpu": cpu(root),
        "memory": memory(root),
        "gpus": gpus(root),
        "python": { "version": python_version },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn reads_a_fake_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        put(
            r,
            "etc/os-release",
            "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        put(r, "proc/sys/kernel/osrelease", "6.18.0\n");
        put(r, "proc/sys/kernel/hostname", "box\n");
        put(
            r,
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Fake CPU\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nmodel name\t: Fake CPU\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 2\nphysical id\t: 0\ncore id\t: 1\n",
        );
        put(r, "proc/loadavg", "0.50 0.25 0.10 1/100 42\n");
        put(
            r,
            "proc/meminfo",
            "MemTotal:       2048 kB\nMemFree:  1 kB\nMemAvailable:   1024 kB\n",
        );
        put(r, "sys/class/drm/card0/device/vendor", "0x10de\n");
        put(r, "sys/class/drm/card0/device/device", "0x2204\n");
        put(r, "sys/class/drm/card0-HDMI-A-1/status", "connected\n");
        put(
            r,
            "proc/driver/nvidia/gpus/0000:01:00.0/information",
            "Model: \t\t GeForce RTX 3090\nIRQ: 1\n",
        );

        let facts = gather(r, "3.11.7");
        assert_eq!(facts["os"]["name"], "Debian GNU/Linux 12");
        assert_eq!(facts["os"]["version"], "12");
        assert_eq!(facts["kernel"]["release"], "6.18.0");
        assert_eq!(facts["hostname"], "box");
        assert_eq!(facts["cpu"]["model"], "Fake CPU");
        assert_eq!(facts["cpu"]["logical"], 3);
        assert_eq!(facts["cpu"]["cores"], 2);
        assert_eq!(facts["cpu"]["load"]["5m"], 0.25);
        assert_eq!(facts["memory"]["total_bytes"], 2048 * 1024);
        assert_eq!(facts["memory"]["available_bytes"], 1024 * 1024);
        let gpus = facts["gpus"].as_array().expect("list");
        assert_eq!(gpus.len(), 2, "{gpus:?}");
        assert_eq!(gpus[0]["vendor_name"], "NVIDIA");
        assert_eq!(gpus[1]["model"], "GeForce RTX 3090");
        assert_eq!(facts["python"]["version"], "3.11.7");
    }

    #[test]
    fn a_machine_without_gpus_has_an_empty_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(gather(dir.path(), "3")["gpus"], json!([]));
    }
}
