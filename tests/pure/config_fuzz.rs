//! `parse_str` never panics: on arbitrary strings, on TOML-ish noise, and on mutations of the
//! shipped etc/lb.toml. (The libFuzzer target is fuzz/fuzz_targets/config_parse.rs.)

use std::path::Path;

use lb::config::{Context, parse_str};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../etc/lb.toml");

fn check(text: &str) {
    let ctx = Context {
        hostname: "worker-1".into(),
        check_files: false,
    };
    match parse_str(text, Path::new("fuzz.toml"), &ctx) {
        Ok(checked) => {
            for w in &checked.warnings {
                let _ = w.to_string();
            }
        }
        Err(d) => {
            assert!(!d.0.is_empty(), "an Err must carry at least one diagnostic");
            for e in &d.0 {
                // Positions are 1-based and inside the text (one past the last line at most).
                assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
                assert!(e.column >= 1, "{e}");
            }
            let _ = d.to_string();
        }
    }
}

/// One edit of the example: delete, insert or replace a short run of characters.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, text: String },
    DuplicateLine { line: usize },
    DropLine { line: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        "[\\[\\]{}=\",.:/ \n#a-z0-9-]{0,8}",
        Just("\"0s\"".to_string()),
        Just("-".to_string()),
        Just("[[pool]]\n".to_string()),
        Just("\"fd00::/0\"".to_string()),
        Just("99999999999999999999".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        (any::<usize>(), 0usize..20).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), fragment.clone()).prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), fragment).prop_map(|(at, text)| Edit::Replace { at, text }),
        any::<usize>().prop_map(|line| Edit::DuplicateLine { line }),
        any::<usize>().prop_map(|line| Edit::DropLine { line }),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len().max(1);
    match edit {
        Edit::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        Edit::Insert { at, text } => {
            let at = at % n;
            let mut out: String = chars[..at].iter().collect();
            out.push_str(text);
            out.extend(&chars[at..]);
            out
        }
        Edit::Replace { at, text } => {
            let at = at % n;
            let end = (at + text.chars().count()).min(chars.len());
            let mut out: String = chars[..at].iter().collect();
            out.push_str(text);
            out.extend(&chars[end..]);
            out
        }
        Edit::DuplicateLine { line } | Edit::DropLine { line } => {
            let lines: Vec<&str> = text.lines().collect();
            let i = line % lines.len().max(1);
            let mut out = Vec::new();
            for (j, l) in lines.iter().enumerate() {
                if j != i || matches!(edit, Edit::DuplicateLine { .. }) {
                    out.push(*l);
                }
                if j == i && matches!(edit, Edit::DuplicateLine { .. }) {
                    out.push(*l);
                }
            }
            out.join("\n")
        }
    }
}

/// The example with its commented-out `key = value` lines switched on.
fn example_uncommented() -> String {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_str_never_panics_on_arbitrary_strings(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn parse_str_never_panics_on_toml_like_noise(text in "([\\[\\]{}=\",.:/ \n#a-z0-9_-]|pool|bgp_peer|service|addresses|name){0,200}") {
        check(&text);
    }

    #[test]
    fn parse_str_never_panics_on_mutations_of_the_example(edits in proptest::collection::vec(edit(), 1..6), uncommented in any::<bool>()) {
        let mut text = if uncommented { example_uncommented() } else { EXAMPLE.to_string() };
        for e in &edits {
            text = apply(&text, e);
        }
        check(&text);
    }
}

#[test]
fn example_with_every_commented_key_switched_on_is_valid() {
    // Catches typos in the documented optional keys and defaults of etc/lb.toml.
    let text = example_uncommented();
    assert!(text.contains("\nstate_dir = ") && text.contains("\nbfd = "));
    let ctx = Context {
        hostname: "worker-1".into(),
        check_files: false,
    };
    let checked = parse_str(&text, Path::new("lb.toml"), &ctx)
        .unwrap_or_else(|e| panic!("uncommented etc/lb.toml is invalid:\n{e}"));
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let peer = &checked.config.bgp_peers[0];
    assert!(peer.bfd.is_some() && peer.password_file.is_some());
}

#[test]
fn deeply_nested_arrays_are_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let text = format!("x = {}{}", "[".repeat(depth), "]".repeat(depth));
    check(&text);
}
