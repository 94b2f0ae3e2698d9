//! The alert rules and the Grafana dashboard lb ships (`packaging/prometheus/lb-alerts.yml`,
//! `packaging/grafana/lb-dashboard.json`): their PromQL queries, and the metric names those
//! name, for the tests that hold them against what lbd exports.

use std::collections::BTreeSet;
use std::path::PathBuf;

pub fn rules_file() -> PathBuf {
    crate::repo_root().join("packaging/prometheus/lb-alerts.yml")
}

pub fn rules_test_file() -> PathBuf {
    crate::repo_root().join("packaging/prometheus/lb-alerts.test.yml")
}

pub fn dashboard_file() -> PathBuf {
    crate::repo_root().join("packaging/grafana/lb-dashboard.json")
}

/// Series Prometheus makes itself when it scrapes, which no exporter exports.
pub const SCRAPE_SERIES: &[&str] = &["up"];

/// (alert name, expression) of every rule in the rules file.
pub fn rule_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(rules_file()).expect("rules file readable");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules file is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .expect("alert or record");
            let expr = rule["expr"].as_str().expect("expr");
            out.push((name.to_string(), expr.to_string()));
        }
    }
    out
}

/// (panel title, expression) of every panel target of the dashboard, and (variable name,
/// `label_values(...)` query) of its template variables.
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dashboard_file()).expect("dashboard readable");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in doc["panels"].as_array().expect("panels") {
        panels.push(p);
        // Panels inside collapsed rows.
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            out.push((
                title.to_string(),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for v in doc["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .expect("variable query");
        out.push((
            format!("${}", v["name"].as_str().unwrap_or_default()),
            q.to_string(),
        ));
    }
    out
}

/// The Grafana variables of `expr` replaced by values Prometheus accepts, so that the
/// query can be checked as PromQL.
pub fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Aggregations may put `by (…)` between their name and their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression selects (a Grafana `label_values(metric, label)`
/// names `metric`). Strings, label matchers, ranges and grouping lists are skipped;
/// identifiers followed by `(` are functions or aggregations.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = grafana_to_promql(expr);
    if let Some(args) = expr.trim().strip_prefix("label_values(") {
        let first = args
            .split([',', '{', ')'])
            .next()
            .unwrap_or_default()
            .trim();
        return BTreeSet::from([first.to_string()]);
    }
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `by`/`without`/`on`/`ignoring`/`group_*`, the next `( … )` lists labels.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if label_list_next => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                label_list_next = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) {
                    label_list_next = matches!(
                        lower.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
                } else if chars.get(j) != Some(&'(') && !AGGREGATIONS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration (5m, 1e3, 0x1f).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The series `name` is a sample of, among `series` (sample names, or histogram names): a
/// histogram's `_bucket`, `_sum` and `_count` samples are the histogram's.
pub fn family_of<'a>(name: &'a str, series: &BTreeSet<String>) -> Option<&'a str> {
    if series.contains(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|f| series.contains(*f))
}
