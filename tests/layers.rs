//! The dependency rules between the crate's layers (design §10), checked on
//! the source text so that CI fails when a file crosses one:
//! - `domain/` is pure: no actix, tokio, threads, files or sockets, and none
//!   of the layers built on it;
//! - `storage/` knows events and bytes, never actors;
//! - nothing but `engine/` itself and `ledger/` reaches the engine;
//! - `payment/` knows payouts, not accounts, storage or the engine;
//! - `http/` uses the public API only (the binary, a separate crate, can do
//!   nothing else);
//! - the library logs through `tracing`, never by printing.
//!
//! A rule is a path prefix and the tokens its code may not use. Comment
//! lines are skipped (docs may name what they do not import).

use std::path::{Path, PathBuf};

struct Rule {
    /// Files under this folder (or this file) of `src/`.
    applies_to: &'static str,
    /// Files the rule does not apply to.
    except: &'static [&'static str],
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        applies_to: "domain/",
        except: &[],
        forbidden: &[
            "actix",
            "tokio",
            "crossbeam",
            "std::fs",
            "std::net",
            "std::thread",
            "std::process",
            "std::time::Instant",
            "SystemTime",
            "crate::engine",
            "crate::storage",
            "crate::payment",
            "crate::ledger",
            "crate::http",
            "crate::clock",
        ],
        why: "the domain is pure: no runtime, no I/O, no time read, no layer above it",
    },
    Rule {
        applies_to: "storage/",
        except: &[],
        forbidden: &[
            "actix",
            "crate::engine",
            "crate::ledger",
            "crate::http",
            "crate::payment",
        ],
        why: "storage knows events and bytes, never actors",
    },
    Rule {
        applies_to: "",
        except: &["engine/", "ledger/", "lib.rs", "bin/"],
        forbidden: &["crate::engine", "engine::"],
        why: "only the Ledger handle uses the engine",
    },
    Rule {
        applies_to: "payment/",
        except: &[],
        forbidden: &[
            "crate::engine",
            "crate::storage",
            "crate::ledger",
            "crate::domain::account",
            "actix",
        ],
        why: "payment knows payouts, not accounts, storage or actors",
    },
    Rule {
        applies_to: "http/",
        except: &[],
        forbidden: &[
            "crate::engine",
            "crate::storage",
            "crate::domain::account",
            "crate::domain::event",
        ],
        why: "the HTTP service uses the public Ledger API like any embedder, whose \
              views carry no account state and no log event types",
    },
    Rule {
        applies_to: "",
        except: &["bin/"],
        forbidden: &["println!", "eprintln!", "print!(", "dbg!("],
        why: "the library logs through tracing",
    },
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every breach of `rule` in `text` (a file at `relative` under `src/`),
/// as "file:line: token".
fn breaches(rule: &Rule, relative: &str, text: &str) -> Vec<String> {
    let applies = relative.starts_with(rule.applies_to)
        && !rule.except.iter().any(|e| relative.starts_with(e));
    if !applies {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for token in rule.forbidden {
            if code.contains(token) {
                found.push(format!("src/{relative}:{}: `{token}`", number + 1));
            }
        }
    }
    found
}

#[test]
fn every_file_keeps_its_layers_rules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    assert!(files.len() > 30, "found the sources: {}", files.len());
    let mut report = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        for rule in RULES {
            for breach in breaches(rule, &relative, &text) {
                report.push(format!("{breach} ({})", rule.why));
            }
        }
    }
    assert!(
        report.is_empty(),
        "layer rules broken:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_check_catches_a_breach_and_skips_comments() {
    let domain = &RULES[0];
    let text = "//! uses tokio elsewhere\nuse tokio::sync::Mutex;\n";
    assert_eq!(
        breaches(domain, "domain/money.rs", text),
        vec!["src/domain/money.rs:2: `tokio`".to_string()]
    );
    let engine_only = &RULES[2];
    let reaching = "use crate::engine::coordinator::Coordinator;";
    assert_eq!(breaches(engine_only, "http/routes.rs", reaching).len(), 2);
    assert!(breaches(engine_only, "ledger/mod.rs", reaching).is_empty());
    assert!(breaches(engine_only, "engine/payout.rs", reaching).is_empty());
}
