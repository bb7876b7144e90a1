//! Property tests of every parser and normalizer here (issue #18): what
//! holds for any input, not only the cases the unit tests thought of.
//! `scripts/fuzz` runs them with many more cases (`PROPTEST_CASES`); the
//! cases proptest shrinks a failure to are kept in
//! `proptest-regressions/` and replayed first.

use crate::{Allowlist, Config, InputSchema, Pattern, Permission, PluginMeta, normalize};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A meta dict that mixes the contract's keys with anything.
fn meta_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            "[a-z][a-z0-9_]{0,15}".prop_map(Value::from),
            any_json()
        ]),
        prop::option::of(any_json()),
        prop::option::of(prop::collection::vec(
            prop_oneof![
                Just("net"),
                Just("network"),
                Just("fs_read"),
                Just("filesystem"),
                Just("fs-write"),
                Just(" Process "),
                Just("root"),
            ]
            .prop_map(Value::from),
            0..5,
        )),
        prop::option::of(any_json()),
        prop::option::of(any_json()),
    )
        .prop_map(|(name, description, permissions, timeout, rest)| {
            let mut m = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            };
            put("name", name);
            put("description", description);
            put("permissions", permissions.map(Value::from));
            put("timeout", timeout);
            put("paths", rest.clone());
            put("limits", rest);
            Value::Object(m)
        })
}

/// A field type of the simplified schema and a value of that type.
fn typed_field() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        ".{0,10}".prop_map(|s| ("string", Value::from(s))),
        any::<i32>().prop_map(|n| ("integer", Value::from(n))),
        (-1e9f64..1e9).prop_map(|f| ("number", Value::from(f))),
        any::<bool>().prop_map(|b| ("boolean", Value::from(b))),
    ]
}

/// A value of another JSON type than `ty` (an integer is a number too).
fn wrong_for(ty: &str) -> Value {
    match ty {
        "string" => json!(12),
        _ => json!("not a ".to_string() + ty),
    }
}

// 256 cases each by default; `PROPTEST_CASES` sets another count.
proptest! {
    #[test]
    fn meta_parsing_never_panics(meta in prop::option::of(any_json()), ty in prop::option::of(".{0,8}")) {
        let _ = PluginMeta::parse(meta.as_ref(), ty.as_deref());
    }

    #[test]
    fn meta_like_dicts_parse_or_name_their_problems(meta in meta_like()) {
        match PluginMeta::parse(Some(&meta), None) {
            Ok(m) => {
                prop_assert_eq!(Some(m.name.as_str()), meta["name"].as_str());
                // Every synonym lands on a canonical permission, once.
                let mut seen = m.permissions.clone();
                seen.dedup();
                prop_assert_eq!(seen.len(), m.permissions.len());
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                prop_assert!(e.problems.iter().all(|p| p.starts_with("meta")), "{:?}", e.problems);
            }
        }
    }

    #[test]
    fn permission_synonyms_are_case_and_dash_blind(
        name in prop_oneof![Just("net"), Just("network"), Just("fs_read"), Just("filesystem"), Just("fs_write"), Just("process")],
        upper in any::<bool>(),
        pad in "[ ]{0,2}",
    ) {
        let canonical = Permission::parse(name).expect("known");
        let mut variant = if upper { name.to_ascii_uppercase() } else { name.to_string() };
        variant = format!("{pad}{}{pad}", variant.replace('_', "-"));
        prop_assert_eq!(Permission::parse(&variant), Some(canonical));
        prop_assert_eq!(Permission::parse(canonical.as_str()), Some(canonical));
    }

    #[test]
    fn schema_normalization_never_panics(raw in prop::option::of(any_json())) {
        if let Ok((source, schema)) = normalize(raw.as_ref()) {
            prop_assert!(InputSchema::compile(source, schema).is_ok());
        }
    }

    /// A value generated from a simplified schema validates; the same
    /// value with one field of the wrong type, or one field too many,
    /// fails naming that field.
    #[test]
    fn generated_values_validate_and_mutations_name_the_field(
        fields in prop::collection::btree_map("[a-z]{1,8}", (typed_field(), any::<bool>()), 1..6),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut dict = Map::new();
        let mut args = Map::new();
        for (name, ((ty, value), required)) in &fields {
            let spec = if *required {
                json!(ty)
            } else {
                json!({"type": ty, "default": value})
            };
            dict.insert(name.clone(), spec);
            args.insert(name.clone(), value.clone());
        }
        let (source, schema) = normalize(Some(&Value::Object(dict))).expect("a valid dict");
        let checker = InputSchema::compile(source, schema).expect("compiles");
        prop_assert!(checker.check(Value::Object(args.clone())).is_ok());

        let names: Vec<&String> = fields.keys().collect();
        let target = names[pick.index(names.len())];
        let ty = fields[target].0.0;
        let mut bad = args.clone();
        bad.insert(target.clone(), wrong_for(ty));
        let violations = checker.check(Value::Object(bad)).expect_err("wrong type refused");
        prop_assert!(
            violations.iter().any(|v| v.field.as_deref() == Some(target.as_str())),
            "{:?} does not name {}", violations, target
        );

        let mut extra = args;
        extra.insert("zz_unknown_9".into(), json!(1));
        let violations = checker.check(Value::Object(extra)).expect_err("extra field refused");
        prop_assert!(violations.iter().any(|v| v.field.as_deref() == Some("zz_unknown_9")), "{:?}", violations);
    }

    #[test]
    fn allowlist_entries_never_panic(entry in ".{0,40}", url in ".{0,60}") {
        if let Ok(p) = Pattern::parse(&entry) {
            let list = Allowlist::effective(None, Some(&[p]));
            let _ = list.check_str(&url);
        }
    }

    /// Matching agrees with a reference written on labels: an exact entry
    /// matches that host only; `*.suffix` matches hosts with more labels
    /// ending in the suffix's; without a port only 80 and 443 pass.
    #[test]
    fn allowlist_matching_agrees_with_a_label_reference(
        entry_labels in prop::collection::vec("[a-c]{1,2}", 1..4),
        wildcard in any::<bool>(),
        entry_port in prop::option::of(prop_oneof![Just(80u16), Just(443u16), Just(8080u16)]),
        host_labels in prop::collection::vec("[a-c]{1,2}", 1..5),
        https in any::<bool>(),
        url_port in prop::option::of(prop_oneof![Just(80u16), Just(443u16), Just(8080u16), Just(9000u16)]),
    ) {
        // A wildcard over a single label (a whole top-level domain) is
        // refused at parsing: its own unit test covers that.
        let wildcard = wildcard && entry_labels.len() >= 2;
        let suffix = entry_labels.join(".");
        let entry = match (wildcard, entry_port) {
            (true, Some(p)) => format!("*.{suffix}:{p}"),
            (true, None) => format!("*.{suffix}"),
            (false, Some(p)) => format!("{suffix}:{p}"),
            (false, None) => suffix.clone(),
        };
        let pattern = Pattern::parse(&entry).expect("a well-formed entry");
        let host = host_labels.join(".");
        let scheme = if https { "https" } else { "http" };
        let url = match url_port {
            Some(p) => format!("{scheme}://{host}:{p}/x"),
            None => format!("{scheme}://{host}/x"),
        };
        let port = url_port.unwrap_or(if https { 443 } else { 80 });
        let host_ok = if wildcard {
            host_labels.len() > entry_labels.len()
                && host_labels[host_labels.len() - entry_labels.len()..] == entry_labels[..]
        } else {
            host_labels == entry_labels
        };
        let port_ok = match entry_port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        let got = Allowlist::effective(None, Some(&[pattern])).check_str(&url).is_ok();
        prop_assert_eq!(got, host_ok && port_ok, "{} vs {}", entry, url);
    }

    #[test]
    fn config_text_never_panics(text in ".{0,80}") {
        let _ = Config::parse(&text, Path::new("greffon.toml"));
    }

    /// Numbers written into the file are read back as written; out of
    /// range, refused naming the key and its line.
    #[test]
    fn config_values_round_trip_or_name_key_and_line(
        timeout in -10.0f64..100_000.0,
        workers in 0usize..100,
        blank_lines in 0usize..3,
    ) {
        let text = format!("{}default_timeout_s = {timeout:?}\nworkers = {workers}\n", "\n".repeat(blank_lines));
        match Config::parse(&text, Path::new("greffon.toml")) {
            Ok(c) => {
                prop_assert_eq!(c.default_timeout_s, timeout);
                prop_assert_eq!(c.workers, workers);
                prop_assert!(timeout > 0.0 && workers > 0);
            }
            Err(e) => {
                prop_assert!(timeout <= 0.0 || workers == 0, "{e}");
                let (key, line) = if timeout <= 0.0 { ("default_timeout_s", 1) } else { ("workers", 2) };
                prop_assert_eq!(e.key.as_deref(), Some(key));
                prop_assert_eq!(e.line, Some(blank_lines + line));
            }
        }
    }
}
