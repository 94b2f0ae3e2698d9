//! The Prometheus alert rules and the Grafana dashboard lb ships: `promtool check rules` and
//! `promtool test rules` (Debian's prometheus package: .ci/install-deps installs it; without
//! it these tests fail, they do not skip), every dashboard query parses as PromQL, and every
//! metric name they use is one lbd documents (tests/lab/alert_series.rs holds them against
//! a running lbd's scrape).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use lb::control::metrics::SERIES;
use lb_testkit::alerts::{
    SCRAPE_SERIES, dashboard_exprs, dashboard_file, family_of, grafana_to_promql, metric_names,
    rule_exprs, rules_file, rules_test_file,
};

fn promtool(args: &[&str], file: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .arg(file)
        .current_dir(file.parent().unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool cannot run ({e}): install Debian's prometheus package (.ci/install-deps)"
            )
        })
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_check_rules_accepts_the_shipped_rules() {
    let out = promtool(&["check", "rules"], &rules_file());
    assert_success("promtool check rules", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("SUCCESS: {} rules found", rule_exprs().len());
    assert!(text.contains(&expected), "{text}");
}

#[test]
fn each_alert_fires_on_its_series_and_not_below_threshold_or_for_shorter_faults() {
    let out = promtool(&["test", "rules"], &rules_test_file());
    assert_success("promtool test rules", &out);
}

/// A rule without a case where it fires would pass `promtool test rules` untested.
#[test]
fn every_alert_has_a_unit_test_where_it_fires() {
    let text = std::fs::read_to_string(rules_test_file()).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut firing = BTreeSet::new();
    for t in doc["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let fired = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            if fired {
                firing.insert(case["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let alerts: BTreeSet<String> = rule_exprs().into_iter().map(|(n, _)| n).collect();
    let untested: Vec<_> = alerts.difference(&firing).collect();
    assert!(
        untested.is_empty(),
        "alerts never seen firing: {untested:?}"
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description() {
    let text = std::fs::read_to_string(rules_file()).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(
                ["info", "warning", "critical"]
                    .contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| s.len() > 20),
                    "{name}: {a}"
                );
            }
        }
    }
}

/// Grafana shows a broken query only when the panel is opened; promtool parses each one as
/// a recording rule's expression.
#[test]
fn every_dashboard_query_is_valid_promql() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let exprs: Vec<_> = dashboard_exprs()
        .into_iter()
        .filter(|(_, e)| !e.starts_with("label_values("))
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = serde_json::to_string(&grafana_to_promql(expr)).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, rules).unwrap();
    assert_success(
        "promtool check rules on the dashboard's queries",
        &promtool(&["check", "rules"], &file),
    );
}

#[test]
fn every_dashboard_panel_uses_the_prometheus_input_datasource() {
    let text = std::fs::read_to_string(dashboard_file()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["__inputs"][0]["name"], "DS_PROMETHEUS");
    for p in doc["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
}

#[test]
fn metric_names_are_read_out_of_promql_and_grafana_queries() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"100 * max by (job, pool) (lb_allocator_addresses_in_use_total{job=~"$job",pool!="a{b}"} / lb_allocator_addresses_total) > 75 <= 85"#
        ),
        [
            "lb_allocator_addresses_in_use_total",
            "lb_allocator_addresses_total"
        ]
    );
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (le) (rate(lb_failover_duration_seconds_bucket[$__rate_interval])))"
        ),
        ["lb_failover_duration_seconds_bucket"]
    );
    assert_eq!(
        names("(time() - a_ts) and on (job, instance) (b_bool == 1) or vector(0)"),
        ["a_ts", "b_bool"]
    );
    assert_eq!(
        names("label_values(lb_build_info{job=~\"$job\"}, instance)"),
        ["lb_build_info"]
    );
}

/// Every name the rules and the dashboard query is a series lbd documents (`SERIES`, which
/// tests/ops/control_metrics.rs holds against the encoder), or one Prometheus makes itself.
#[test]
fn every_metric_the_rules_and_dashboard_use_is_a_documented_lbd_series() {
    let documented: BTreeSet<String> = SERIES.iter().map(|(n, ..)| n.to_string()).collect();
    let mut used = BTreeSet::new();
    for (what, expr) in rule_exprs().into_iter().chain(dashboard_exprs()) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr}");
        for n in names {
            assert!(
                family_of(&n, &documented).is_some() || SCRAPE_SERIES.contains(&n.as_str()),
                "{what}: {n} is not a series lbd exports (expr: {expr})"
            );
            used.insert(n);
        }
    }
    // The issue's list: each of these is alerted on or shown.
    for n in [
        "lb_config_stale_bool",
        "lb_allocator_addresses_in_use_total",
        "lb_bgp_session_up",
        "lb_bfd_session_up",
        "lb_cluster_is_leader",
        "lb_cluster_member_healthy",
        "lb_layer2_ip_has_owner",
        "lb_failover_duration_seconds_count",
        "lb_config_reload_failures_total",
    ] {
        assert!(used.contains(n), "{n} unused: {used:?}");
    }
}
