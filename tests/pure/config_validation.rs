//! lb.toml validation: one test per rule, each checking the message and where it points.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use lb::config::*;
use lb::model::{Community, LabelOperator, LargeCommunity, PoolProtocol, Protocol};

const FILE: &str = "/etc/lb.toml";

/// A minimal valid layer-2 pool.
const POOL: &str = r#"
[[pool]]
name = "p"
protocol = "layer2"
addresses = ["10.0.0.0/24"]
"#;

/// A bgp pool and a peer, to attach advertisements or peer settings to.
const BGP: &str = r#"
[[pool]]
name = "b"
protocol = "bgp"
addresses = ["172.19.100.0/24", "fd00:20::/120"]

[[bgp_peer]]
my_asn = 64500
peer_asn = 64500
address = "10.0.0.1"
"#;

fn ctx() -> Context {
    Context {
        hostname: "worker-1".into(),
        check_files: false,
    }
}

fn parse_with(text: &str, ctx: &Context) -> Result<Checked, Diagnostics> {
    parse_str(text, Path::new(FILE), ctx)
}

fn valid(text: &str) -> Checked {
    parse_with(text, &ctx()).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

fn errors_with(text: &str, ctx: &Context) -> Vec<Diagnostic> {
    match parse_with(text, ctx) {
        Ok(c) => panic!("expected errors, got a valid config: {c:#?}"),
        Err(d) => {
            let errors: Vec<Diagnostic> = d.errors().cloned().collect();
            assert!(!errors.is_empty(), "Err without errors: {d}");
            errors
        }
    }
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the test text"));
    line_column(text, offset)
}

/// 1-based line and column of the last occurrence of `needle` in `text`.
fn position_last(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .rfind(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the test text"));
    line_column(text, offset)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Asserts exactly one error, located at the first occurrence of `at`, whose message contains
/// every one of `parts`.
fn assert_error(text: &str, at: &str, parts: &[&str]) -> Diagnostic {
    assert_error_with(text, &ctx(), at, parts)
}

fn assert_error_with(text: &str, ctx: &Context, at: &str, parts: &[&str]) -> Diagnostic {
    let errors = errors_with(text, ctx);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got:\n{}",
        Diagnostics(errors.clone())
    );
    let e = errors.into_iter().next().unwrap();
    assert_eq!(
        (e.line, e.column),
        position(text, at),
        "error at the wrong place: {e}"
    );
    assert_eq!(e.file, Path::new(FILE));
    for p in parts {
        assert!(e.message.contains(p), "{:?} lacks {p:?}", e.message);
    }
    assert!(
        e.message.contains("expected"),
        "message does not say what was expected: {}",
        e.message
    );
    e
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---- the example and the basics -----------------------------------------------------------

#[test]
fn example_config_validates_with_defaults_filled_in() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/lb.toml"))
        .expect("etc/lb.toml is readable");
    let checked = valid(&text);
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let c = checked.config;
    assert_eq!(c.node.name, "worker-1");
    assert_eq!(c.node.role, Role::Member);
    assert_eq!(c.cluster.members.len(), 3);
    assert_eq!(c.cluster.lease, Duration::from_millis(150));
    assert_eq!(c.pools.len(), 3);
    assert_eq!(c.pools[1].protocol, PoolProtocol::Bgp);
    assert_eq!(c.pools[2].protocol, PoolProtocol::None);
    assert_eq!(
        c.pools[1].bgp_advertisements[0].communities,
        vec![Community((64500 << 16) | 100), Community::NO_EXPORT]
    );
    assert_eq!(c.bgp_peers[0].keepalive_time, Duration::from_secs(30));
    assert_eq!(c.services[0].ip, Some(ip("10.10.100.210")));
    assert_eq!(
        c.metrics.listen,
        "127.0.0.1:7472".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn minimal_config_gets_every_default() {
    let c = valid(POOL).config;
    assert_eq!(c.node.name, "worker-1");
    assert_eq!(c.node.state_dir, Path::new("/var/lib/lb"));
    assert_eq!(c.kubernetes, None);
    assert_eq!(c.layer2.gratuitous_count, 3);
    assert_eq!(c.layer2.gratuitous_interval, Duration::from_secs(1));
    assert_eq!(c.layer2.refresh_interval, Some(Duration::from_secs(30)));
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.format, LogFormat::Auto);
    let p = &c.pools[0];
    assert!(p.auto_assign);
    assert!(!p.avoid_buggy_ips);
    assert_eq!(p.ranges[0].first, ip("10.0.0.0"));
    assert_eq!(p.ranges[0].last, ip("10.0.0.255"));
}

#[test]
fn absent_cluster_table_is_a_cluster_of_this_host_alone() {
    let c = valid(POOL).config;
    assert_eq!(c.cluster.members.keys().collect::<Vec<_>>(), ["worker-1"]);
    assert_eq!(c.cluster.secret_file, None);
    assert_eq!(c.cluster.heartbeat, Duration::from_millis(50));
    assert_eq!(c.cluster.election_timeout, Duration::from_millis(300));
}

#[test]
fn default_node_name_is_the_lowercased_hostname() {
    let ctx = Context {
        hostname: "Worker-7\n".into(),
        check_files: false,
    };
    let c = parse_with(POOL, &ctx).unwrap().config;
    assert_eq!(c.node.name, "worker-7");
}

#[test]
fn node_name_in_file_overrides_hostname() {
    let text = format!("[node]\nname = \"worker-2\"\nrole = \"witness\"\n{POOL}");
    let c = valid(&text).config;
    assert_eq!(c.node.name, "worker-2");
    assert_eq!(c.node.role, Role::Witness);
}

#[test]
fn unknown_role_is_an_error() {
    let text = format!("[node]\nrole = \"leader\"\n{POOL}");
    assert_error(&text, "\"leader\"", &["\"member\" or \"witness\""]);
}

#[test]
fn missing_hostname_without_node_name_is_an_error() {
    let ctx = Context {
        hostname: String::new(),
        check_files: false,
    };
    let errors = errors_with(POOL, &ctx);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("[node] name"), "{}", errors[0]);
}

#[test]
fn kubernetes_table_is_parsed() {
    let text = format!(
        "[kubernetes]\nkubeconfig = \"/etc/lb/kubeconfig\"\nload_balancer_class = \"example.com/lb\"\nignore_exclude_label = true\n{POOL}"
    );
    let k = valid(&text).config.kubernetes.unwrap();
    assert_eq!(k.kubeconfig, Path::new("/etc/lb/kubeconfig"));
    assert_eq!(k.load_balancer_class.as_deref(), Some("example.com/lb"));
    assert!(k.ignore_exclude_label);
}

#[test]
fn relative_kubeconfig_path_is_an_error() {
    let text = format!("[kubernetes]\nkubeconfig = \"kubeconfig\"\n{POOL}");
    assert_error(&text, "\"kubeconfig\"\n", &["absolute path"]);
}

// ---- syntax and unknown keys ----------------------------------------------------------------

#[test]
fn toml_syntax_error_points_at_line_and_column() {
    let text = format!("{POOL}\n[node]\nname = \"worker-1\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors[0].line, position(&text, "\"worker-1").0);
}

#[test]
fn an_unclosed_array_is_one_error_where_it_opens_not_a_cascade() {
    // The parser reads on through `[node]` and `name = node-1` as array elements; what it
    // then finds there ("invalid float, expected `nan`", missing commas...) is not reported.
    let text = format!(
        "{POOL}\n[[service]]\nname = \"web\"\nports = [\"80/tcp\", \"443/tcp\"\n[node]\nname = node-1\n"
    );
    let e = assert_error(&text, "[\"80/tcp\"", &["unclosed array", "`]`"]);
    assert!(!e.message.contains("nan"), "{e}");
}

#[test]
fn an_unclosed_inline_table_and_multiline_string_are_reported_where_they_open() {
    let text =
        format!("{POOL}\n[cluster]\nmembers = {{ a = \"10.0.0.1:7946\"\n[node]\nname = \"a\"\n");
    assert_error(&text, "{ a =", &["unclosed inline table", "`}`"]);
    let text = format!("{POOL}\n[node]\nname = \"\"\"a\nrole = nope\n");
    assert_error(
        &text,
        "\"\"\"a",
        &["unclosed multi-line string", "\"\"\" to end it"],
    );
}

#[test]
fn two_unquoted_values_are_two_errors_saying_quote_them() {
    let text = format!("{POOL}\n[node]\nname = node-1\n\n[metrics]\nlisten = 127.0.0.1:7472\n");
    let errors = errors_with(&text, &ctx());
    let shown = Diagnostics(errors.clone()).to_string();
    assert_eq!(errors.len(), 2, "{shown}");
    assert_eq!(
        (errors[0].line, errors[0].column),
        position(&text, "node-1")
    );
    assert_eq!(
        errors[0].message,
        "`node-1` is not a TOML value: expected a quoted string, \"node-1\""
    );
    // The whole address, not the `:7472` where the number reading stopped.
    assert_eq!(
        (errors[1].line, errors[1].column),
        position(&text, "127.0.0.1")
    );
    assert!(
        errors[1]
            .message
            .starts_with("`127.0.0.1:7472` is not a TOML value"),
        "{shown}"
    );
    assert!(!shown.contains("float"), "{shown}");
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let text = format!("{POOL}\n[nodes]\nname = \"x\"\n");
    assert_error(&text, "nodes", &["unknown key `nodes`", "`node`"]);
}

#[test]
fn unknown_key_in_a_table_names_the_allowed_keys() {
    let text = format!("[node]\nnmae = \"x\"\n{POOL}");
    assert_error(
        &text,
        "nmae",
        &["unknown key `nmae`", "`name`", "`state_dir`"],
    );
}

#[test]
fn unknown_key_in_a_pool_is_an_error() {
    let text = format!("{POOL}auto_asign = false\n");
    assert_error(
        &text,
        "auto_asign",
        &["unknown key `auto_asign`", "`auto_assign`"],
    );
}

#[test]
fn unknown_key_in_an_inline_table_is_an_error() {
    let text = format!("{BGP}bfd = {{ receive_interval = \"300ms\", multiplier = 3 }}\n");
    assert_error(&text, "multiplier", &["unknown key `multiplier`"]);
}

#[test]
fn wrong_value_type_is_an_error_saying_the_expected_type() {
    let text = format!("{POOL}auto_assign = \"yes\"\n");
    assert_error(&text, "\"yes\"", &["expected a boolean"]);
}

#[test]
fn pool_written_as_a_plain_table_is_an_error() {
    let text = "[pool]\nname = \"p\"\nprotocol = \"layer2\"\naddresses = [\"10.0.0.0/24\"]\n";
    let errors = errors_with(text, &ctx());
    assert!(errors.iter().any(|e| e.message.contains("[[pool]]")));
}

#[test]
fn missing_required_key_points_at_its_table() {
    let text = "[[pool]]\nname = \"p\"\naddresses = [\"10.0.0.0/24\"]\n";
    assert_error(text, "[[pool]]", &["missing required key `protocol`"]);
}

#[test]
fn config_without_pools_is_an_error() {
    let errors = errors_with("[log]\nlevel = \"info\"\n", &ctx());
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("[[pool]]"));
}

#[test]
fn all_errors_are_collected_in_file_order() {
    let text = r#"
[node]
role = "boss"

[[pool]]
name = "p"
protocol = "layer3"
addresses = ["10.0.0.1/24"]

[[bgp_peer]]
my_asn = 0
peer_asn = 64500
address = "10.0.0.1"
hold_time = "2s"

[log]
level = "loud"
"#;
    let errors = errors_with(text, &ctx());
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        vec![
            position(text, "\"boss\"").0,
            position(text, "\"layer3\"").0,
            position(text, "\"10.0.0.1/24\"").0,
            position(text, "= 0").0,
            position(text, "\"2s\"").0,
            position(text, "\"loud\"").0,
        ],
        "{}",
        Diagnostics(errors.clone())
    );
}

#[test]
fn deserialization_errors_in_several_sections_are_all_reported() {
    let text = format!("[node]\nbogus = 1\n{POOL}\n[log]\nbogus = 2\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 2, "{}", Diagnostics(errors.clone()));
}

// ---- addresses --------------------------------------------------------------------------------

#[test]
fn addresses_accept_cidrs_single_ips_and_spaced_ranges() {
    let text = r#"
[[pool]]
name = "p"
protocol = "layer2"
addresses = ["10.0.0.0/30", "10.0.1.7", "10.0.2.10 - 10.0.2.20", "fd00::/120"]
"#;
    let ranges = &valid(text).config.pools[0].ranges;
    let shown: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        [
            "10.0.0.0-10.0.0.3",
            "10.0.1.7",
            "10.0.2.10-10.0.2.20",
            "fd00::-fd00::ff"
        ]
    );
}

#[test]
fn cidr_with_host_bits_set_names_the_network() {
    let text = POOL.replace("10.0.0.0/24", "10.0.0.5/24");
    assert_error(
        &text,
        "\"10.0.0.5/24\"",
        &["host bits", "expected the network address 10.0.0.0/24"],
    );
}

#[test]
fn ipv6_cidr_with_host_bits_set_names_the_network() {
    let text = POOL.replace("10.0.0.0/24", "fd00::1:5/112");
    assert_error(&text, "\"fd00::1:5/112\"", &["fd00::1:0/112"]);
}

#[test]
fn range_ending_before_it_starts_is_an_error() {
    let text = POOL.replace("10.0.0.0/24", "10.0.0.9-10.0.0.1");
    assert_error(&text, "\"10.0.0.9-10.0.0.1\"", &["ends before it starts"]);
}

#[test]
fn range_mixing_families_is_an_error() {
    let text = POOL.replace("10.0.0.0/24", "10.0.0.1-fd00::1");
    assert_error(&text, "\"10.0.0.1-fd00::1\"", &["mixes IPv4 and IPv6"]);
}

#[test]
fn garbage_address_is_an_error() {
    let text = POOL.replace("10.0.0.0/24", "10.0.0/24");
    assert_error(&text, "\"10.0.0/24\"", &["expected a CIDR"]);
}

#[test]
fn prefix_length_beyond_the_family_is_an_error() {
    let text = POOL.replace("10.0.0.0/24", "10.0.0.0/33");
    assert_error(&text, "\"10.0.0.0/33\"", &["at most /32"]);
}

#[test]
fn empty_addresses_is_an_error() {
    let text = POOL.replace("[\"10.0.0.0/24\"]", "[]");
    assert_error(&text, "[]", &["empty addresses", "at least one"]);
}

#[test]
fn overlapping_ranges_within_a_pool_are_an_error() {
    let text = POOL.replace(
        "\"10.0.0.0/24\"",
        "\"10.0.0.0/24\", \"10.0.0.200-10.0.1.5\"",
    );
    assert_error(
        &text,
        "\"10.0.0.200-10.0.1.5\"",
        &["overlaps 10.0.0.0/24", "same pool"],
    );
}

#[test]
fn overlapping_ranges_across_pools_are_an_error() {
    let text = format!(
        "{POOL}\n[[pool]]\nname = \"q\"\nprotocol = \"layer2\"\naddresses = [\"10.1.0.0/24\", \"10.0.0.128/25\"]\n"
    );
    assert_error(
        &text,
        "\"10.0.0.128/25\"",
        &["overlaps 10.0.0.0/24 of pool \"p\""],
    );
}

#[test]
fn overlap_hidden_behind_a_long_range_is_found() {
    // The third range overlaps the first but not the second, which starts between them.
    let text = POOL.replace(
        "\"10.0.0.0/24\"",
        "\"10.0.0.0/16\", \"10.0.5.0/24\", \"10.0.9.9\"",
    );
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 2, "{}", Diagnostics(errors.clone()));
    assert!(
        errors
            .iter()
            .all(|e| e.message.contains("overlaps 10.0.0.0/16"))
    );
}

#[test]
fn adjacent_ranges_and_other_families_do_not_overlap() {
    let text = POOL.replace(
        "\"10.0.0.0/24\"",
        "\"10.0.0.0/24\", \"10.0.1.0-10.0.1.9\", \"::ffff:10.0.0.1\"",
    );
    valid(&text);
}

#[test]
fn duplicate_pool_names_are_an_error() {
    let text = format!("{POOL}{}", POOL.replace("10.0.0.0/24", "10.9.0.0/24"));
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert_eq!(
        (errors[0].line, errors[0].column),
        position_last(&text, "\"p\"")
    );
    assert!(errors[0].message.contains("duplicate pool name \"p\""));
}

#[test]
fn unknown_pool_protocol_is_an_error() {
    let text = POOL.replace("\"layer2\"", "\"l2\"");
    assert_error(&text, "\"l2\"", &["\"layer2\", \"bgp\" or \"none\""]);
}

/// An allocate-only pool (MetalLB's IPAddressPool without an advertisement).
const NONE_POOL: &str = r#"
[[pool]]
name = "static-routed"
protocol = "none"
addresses = ["192.0.2.0/28"]
"#;

#[test]
fn allocate_only_pool_is_parsed_with_protocol_none() {
    let checked = valid(NONE_POOL);
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let pool = &checked.config.pools[0];
    assert_eq!(pool.protocol, PoolProtocol::None);
    assert!(!pool.protocol.announced());
    assert_eq!(pool.ranges.len(), 1);
    assert!(pool.auto_assign);
}

#[test]
fn interfaces_on_an_allocate_only_pool_is_an_error() {
    let text = format!("{NONE_POOL}interfaces = [\"eth0\"]\n");
    assert_error(
        &text,
        "[\"eth0\"]",
        &["layer2 pools", "\"static-routed\" is none"],
    );
}

#[test]
fn node_selectors_on_an_allocate_only_pool_is_an_error() {
    let text = format!("{NONE_POOL}node_selectors = [{{ match_labels = {{ rack = \"a\" }} }}]\n");
    assert_error(
        &text,
        "{ match_labels",
        &["allocate-only", "no node_selectors"],
    );
}

#[test]
fn bgp_advertisement_on_an_allocate_only_pool_is_an_error() {
    let text = format!("{NONE_POOL}\n[[pool.bgp_advertisement]]\naggregation_length = 32\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert!(
        errors[0]
            .message
            .contains("bgp_advertisement is for bgp pools, but pool \"static-routed\" is none")
    );
    assert_eq!(
        errors[0].line,
        position(&text, "[[pool.bgp_advertisement]]").0
    );
}

#[test]
fn static_service_may_use_an_allocate_only_pool() {
    let text = format!("{NONE_POOL}\n[[service]]\nname = \"vip\"\npool = \"static-routed\"\n");
    let c = valid(&text).config;
    assert_eq!(c.services[0].pool, "static-routed");
}

#[test]
fn interfaces_on_a_bgp_pool_is_an_error() {
    let text = BGP.replace(
        "addresses = [\"172.19.100.0/24\", \"fd00:20::/120\"]",
        "addresses = [\"172.19.100.0/24\"]\ninterfaces = [\"eth0\"]",
    );
    assert_error(&text, "[\"eth0\"]", &["layer2 pools", "\"b\" is bgp"]);
}

#[test]
fn bad_interface_name_is_an_error() {
    let text = format!("{POOL}interfaces = [\"a-very-long-interface-name\"]\n");
    assert_error(&text, "\"a-very-long", &["1 to 15 characters"]);
}

#[test]
fn bgp_advertisement_on_a_layer2_pool_is_an_error() {
    let text = format!("{POOL}\n[[pool.bgp_advertisement]]\naggregation_length = 32\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert!(
        errors[0]
            .message
            .contains("bgp_advertisement is for bgp pools")
    );
    assert_eq!(
        errors[0].line,
        position(&text, "[[pool.bgp_advertisement]]").0
    );
}

#[test]
fn label_selectors_are_parsed() {
    let text = format!(
        "{POOL}node_selectors = [{{ match_labels = {{ rack = \"a\" }}, match_expressions = [{{ key = \"zone\", operator = \"NotIn\", values = [\"x\"] }}, {{ key = \"gpu\", operator = \"Exists\" }}] }}]\n"
    );
    let s = &valid(&text).config.pools[0].node_selectors[0];
    assert_eq!(s.match_labels.get("rack").map(String::as_str), Some("a"));
    assert_eq!(s.match_expressions[0].operator, LabelOperator::NotIn);
    assert_eq!(s.match_expressions[1].operator, LabelOperator::Exists);
}

#[test]
fn invalid_label_selector_operator_is_an_error() {
    let text = format!(
        "{POOL}node_selectors = [{{ match_expressions = [{{ key = \"zone\", operator = \"in\", values = [\"x\"] }}] }}]\n"
    );
    assert_error(&text, "\"in\"", &["In, NotIn, Exists or DoesNotExist"]);
}

#[test]
fn in_operator_without_values_is_an_error() {
    let text = format!(
        "{POOL}node_selectors = [{{ match_expressions = [{{ key = \"zone\", operator = \"In\" }}] }}]\n"
    );
    assert_error(&text, "\"In\"", &["needs values"]);
}

#[test]
fn exists_operator_with_values_is_an_error() {
    let text = format!(
        "{POOL}node_selectors = [{{ match_expressions = [{{ key = \"zone\", operator = \"Exists\", values = [\"x\"] }}] }}]\n"
    );
    assert_error(&text, "[\"x\"]", &["takes no values"]);
}

// ---- pools chosen by namespace and Service ------------------------------------------------------

#[test]
fn service_allocation_keys_are_parsed() {
    let text = format!(
        "{POOL}priority = 10\nnamespaces = [\"team-a\", \"team-a\", \"shared\"]\nnamespace_selectors = [{{ match_labels = {{ team = \"a\" }} }}]\nservice_selectors = [{{ match_expressions = [{{ key = \"tier\", operator = \"In\", values = [\"db\"] }}] }}]\n"
    );
    let checked = valid(&text);
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let sa = &checked.config.pools[0].service_allocation;
    assert_eq!(sa.priority, 10);
    assert_eq!(sa.namespaces, ["team-a", "shared"], "duplicates dropped");
    assert_eq!(
        sa.namespace_selectors[0]
            .match_labels
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    assert_eq!(
        sa.service_selectors[0].match_expressions[0].operator,
        LabelOperator::In
    );
    // Absent: a pool for every Service.
    assert!(!valid(POOL).config.pools[0].service_allocation.is_set());
}

#[test]
fn a_negative_priority_is_an_error() {
    let text = format!("{POOL}priority = -1\n");
    assert_error(&text, "-1", &["priority"]);
}

#[test]
fn a_priority_that_is_not_a_number_is_an_error() {
    let text = format!("{POOL}priority = \"high\"\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    let e = &errors[0];
    assert_eq!(e.line, position(&text, "\"high\"").0, "{e}");
    assert_eq!(e.file, Path::new(FILE));
}

#[test]
fn a_namespace_selector_that_does_not_parse_is_an_error() {
    let text = format!(
        "{POOL}namespace_selectors = [{{ match_expressions = [{{ key = \"team\", operator = \"Equals\", values = [\"a\"] }}] }}]\n"
    );
    assert_error(&text, "\"Equals\"", &["In, NotIn, Exists or DoesNotExist"]);
}

#[test]
fn a_service_selector_with_a_bad_label_key_or_value_is_an_error() {
    let text =
        format!("{POOL}service_selectors = [{{ match_labels = {{ \"-tier\" = \"db\" }} }}]\n");
    assert_error(&text, "\"-tier\"", &["label key \"-tier\""]);
    let text = format!("{POOL}service_selectors = [{{ match_labels = {{ tier = \"d b\" }} }}]\n");
    assert_error(&text, "\"d b\"", &["not a label value"]);
    let text = format!(
        "{POOL}service_selectors = [{{ match_expressions = [{{ key = \"tier\", operator = \"In\", values = [\"db/\"] }}] }}]\n"
    );
    assert_error(&text, "\"db/\"", &["not a label value"]);
}

#[test]
fn an_invalid_namespace_name_is_an_error() {
    let text = format!("{POOL}namespaces = [\"Team_A\"]\n");
    assert_error(&text, "\"Team_A\"", &["namespace \"Team_A\""]);
}

#[test]
fn a_priority_alone_is_a_warning_that_the_pool_leaves_auto_assignment() {
    let text = format!("{POOL}priority = 1\n");
    let checked = valid(&text);
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
    assert!(
        checked.warnings[0]
            .message
            .contains("no longer auto-assigned")
    );
    assert_eq!(checked.warnings[0].line, position(&text, "priority").0);
}

// ---- BGP advertisements -----------------------------------------------------------------------

#[test]
fn advertisement_communities_resolve_aliases_and_well_known_names() {
    let text = format!(
        "[bgp_communities]\nvpn-only = \"1234:1\"\nbig = \"64500:1:2\"\n{BGP}\n[[pool.bgp_advertisement]]\ncommunities = [\"vpn-only\", \"big\", \"no-advertise\", \"65000:7\", \"1:2:3\"]\n"
    );
    // `[[pool.bgp_advertisement]]` after a [[bgp_peer]] attaches to the last pool.
    let c = valid(&text).config;
    let adv = &c.pools[0].bgp_advertisements[0];
    assert_eq!(
        adv.communities,
        vec![
            Community((1234 << 16) | 1),
            Community::NO_ADVERTISE,
            Community((65000 << 16) | 7)
        ]
    );
    assert_eq!(
        adv.large_communities,
        vec![
            LargeCommunity {
                global: 64500,
                local1: 1,
                local2: 2
            },
            LargeCommunity {
                global: 1,
                local1: 2,
                local2: 3
            }
        ]
    );
}

#[test]
fn unknown_community_is_an_error() {
    let text = format!("{BGP}\n[[pool.bgp_advertisement]]\ncommunities = [\"vpn-only\"]\n");
    assert_error(
        &text,
        "\"vpn-only\"",
        &["not a community", "[bgp_communities]"],
    );
}

#[test]
fn community_alias_with_bad_value_is_an_error() {
    let text = format!("[bgp_communities]\nx = \"70000:1\"\n{BGP}");
    assert_error(&text, "\"70000:1\"", &["asn:value"]);
}

#[test]
fn aggregation_length_shorter_than_a_pool_cidr_is_an_error() {
    let text = format!("{BGP}\n[[pool.bgp_advertisement]]\naggregation_length = 23\n");
    assert_error(
        &text,
        "23",
        &[
            "aggregation_length 23",
            "172.19.100.0-172.19.100.255",
            "at least 24",
        ],
    );
}

#[test]
fn aggregation_length_shorter_than_a_range_covering_prefix_is_an_error() {
    let text = BGP.replace("\"172.19.100.0/24\"", "\"172.19.100.1-172.19.100.6\"")
        + "\n[[pool.bgp_advertisement]]\naggregation_length = 28\n";
    assert_error(&text, "28", &["/29", "at least 29"]);
}

#[test]
fn aggregation_length_at_the_pool_prefix_is_valid() {
    let text = format!(
        "{BGP}\n[[pool.bgp_advertisement]]\naggregation_length = 24\naggregation_length_v6 = 120\n"
    );
    let adv = &valid(&text).config.pools[0].bgp_advertisements[0];
    assert_eq!(
        (adv.aggregation_length_v4, adv.aggregation_length_v6),
        (24, 120)
    );
}

#[test]
fn aggregation_length_above_32_is_an_error() {
    let text = format!("{BGP}\n[[pool.bgp_advertisement]]\naggregation_length = 33\n");
    assert_error(&text, "33", &["from 0 to 32"]);
}

#[test]
fn aggregation_length_v6_above_128_is_an_error() {
    let text = format!("{BGP}\n[[pool.bgp_advertisement]]\naggregation_length_v6 = 129\n");
    assert_error(&text, "129", &["from 0 to 128"]);
}

#[test]
fn aggregation_length_v6_is_checked_against_ipv6_ranges() {
    let text = format!("{BGP}\n[[pool.bgp_advertisement]]\naggregation_length_v6 = 119\n");
    assert_error(&text, "119", &["/120", "at least 120"]);
}

#[test]
fn advertisement_to_an_unknown_peer_is_an_error() {
    let text = format!("{BGP}\n[[pool.bgp_advertisement]]\npeers = [\"10.0.0.99\"]\n");
    assert_error(
        &text,
        "\"10.0.0.99\"",
        &["not the address of any [[bgp_peer]]", "10.0.0.1"],
    );
}

#[test]
fn local_pref_with_only_ebgp_peers_warns() {
    let text = BGP.replace("peer_asn = 64500", "peer_asn = 64501")
        + "\n[[pool.bgp_advertisement]]\nlocal_pref = 200\n";
    let checked = valid(&text);
    assert_eq!(checked.warnings.len(), 1);
    assert!(checked.warnings[0].message.contains("iBGP peers only"));
    assert_eq!(checked.warnings[0].severity, Severity::Warning);
}

#[test]
fn bgp_pool_without_peers_warns() {
    let text = "[[pool]]\nname = \"b\"\nprotocol = \"bgp\"\naddresses = [\"172.19.0.0/24\"]\n";
    let checked = valid(text);
    assert_eq!(checked.warnings.len(), 1);
    assert!(checked.warnings[0].message.contains("no [[bgp_peer]]"));
}

// ---- BGP peers --------------------------------------------------------------------------------

#[test]
fn peer_defaults_are_filled_in() {
    let p = valid(BGP).config.bgp_peers[0].clone();
    assert_eq!(p.port, 179);
    assert_eq!(p.hold_time, Duration::from_secs(90));
    assert_eq!(p.keepalive_time, Duration::from_secs(30));
    assert_eq!(p.ebgp_multihop, 1);
    assert!(!p.passive);
    assert_eq!(p.connect_delay, Duration::ZERO);
    assert_eq!(p.bfd, None);
    assert!(p.is_ibgp());
    // Test fixtures build peers with `BgpPeer::new`: it must be what the parser makes.
    assert_eq!(p, BgpPeer::new(64500, 64500, "10.0.0.1".parse().unwrap()));
}

#[test]
fn connect_time_is_whole_seconds_from_1s_to_65535s() {
    let p = valid(&format!("{BGP}connect_time = \"10s\"\n"))
        .config
        .bgp_peers[0]
        .clone();
    assert_eq!(p.connect_time, Some(Duration::from_secs(10)));
    assert_eq!(valid(BGP).config.bgp_peers[0].connect_time, None);
    let text = format!("{BGP}connect_time = \"0s\"\n");
    assert_error(&text, "\"0s\"", &["connect_time 0s", "1s to 65535s"]);
    let text = format!("{BGP}connect_time = \"1500ms\"\n");
    assert_error(&text, "\"1500ms\"", &["connect_time", "whole seconds"]);
    let text = format!("{BGP}connect_time = \"20h\"\n");
    assert_error(&text, "\"20h\"", &["connect_time", "at most 65535s"]);
    let text = format!("{BGP}connect_time = \"soon\"\n");
    assert_error(&text, "\"soon\"", &["connect_time"]);
}

#[test]
fn connect_time_on_a_passive_peer_warns() {
    let checked = valid(&format!("{BGP}passive = true\nconnect_time = \"5s\"\n"));
    assert_eq!(checked.warnings.len(), 1);
    assert!(
        checked.warnings[0]
            .message
            .contains("no effect on a passive peer")
    );
}

#[test]
fn dynamic_asn_replaces_peer_asn() {
    let internal = BGP.replace("peer_asn = 64500", "dynamic_asn = \"internal\"");
    let p = valid(&internal).config.bgp_peers[0].clone();
    assert_eq!(p.dynamic_asn, Some(DynamicAsn::Internal));
    assert_eq!(p.peer_asn, 64500);
    assert!(p.is_ibgp());
    let external = BGP.replace("peer_asn = 64500", "dynamic_asn = \"external\"");
    let p = valid(&external).config.bgp_peers[0].clone();
    assert_eq!(p.dynamic_asn, Some(DynamicAsn::External));
    assert_eq!(p.peer_asn, 0);
    assert!(!p.is_ibgp());
}

#[test]
fn dynamic_asn_with_peer_asn_is_an_error() {
    let text = format!("{BGP}dynamic_asn = \"external\"\n");
    assert_error(
        &text,
        "\"external\"",
        &["dynamic_asn and peer_asn are both set"],
    );
}

#[test]
fn unknown_dynamic_asn_is_an_error() {
    let text = BGP.replace("peer_asn = 64500", "dynamic_asn = \"ebgp\"");
    assert_error(&text, "\"ebgp\"", &["\"internal\"", "\"external\""]);
}

#[test]
fn peer_without_peer_asn_or_dynamic_asn_is_an_error() {
    let text = BGP.replace("peer_asn = 64500\n", "");
    assert_error(
        &text,
        "[[bgp_peer]]",
        &["missing required key `peer_asn`", "dynamic_asn"],
    );
}

#[test]
fn peer_with_every_key_is_parsed() {
    let text = BGP.replace("peer_asn = 64500", "peer_asn = 4200000000")
        + r#"port = 1179
hold_time = "9s"
router_id = "10.0.0.3"
source_address = "10.0.0.3"
ebgp_multihop = 2
passive = true
connect_delay = "1m30s"
node_selectors = [{ match_labels = { rack = "a" } }]
bfd = { receive_interval = "100ms", detect_multiplier = 5 }
"#;
    let p = valid(&text).config.bgp_peers[0].clone();
    assert_eq!(p.peer_asn, 4_200_000_000);
    assert_eq!(p.port, 1179);
    assert_eq!(p.hold_time, Duration::from_secs(9));
    assert_eq!(p.keepalive_time, Duration::from_secs(3));
    assert_eq!(p.router_id, Some("10.0.0.3".parse().unwrap()));
    assert_eq!(p.source_address, Some(ip("10.0.0.3")));
    assert_eq!(p.ebgp_multihop, 2);
    assert!(p.passive);
    assert_eq!(p.connect_delay, Duration::from_secs(90));
    assert_eq!(p.node_selectors.len(), 1);
    let bfd = p.bfd.unwrap();
    assert_eq!(bfd.receive_interval, Duration::from_millis(100));
    assert_eq!(bfd.transmit_interval, Duration::from_millis(300));
    assert_eq!(bfd.detect_multiplier, 5);
}

#[test]
fn hold_time_below_three_seconds_is_an_error() {
    let text = format!("{BGP}hold_time = \"2s\"\n");
    let e = assert_error(&text, "\"2s\"", &[]);
    let (line, column) = position(&text, "\"2s\"");
    assert_eq!(
        e.to_string(),
        format!(
            "{FILE}:{line}:{column}: error: hold_time 2s is too short: expected 0s or at least 3s"
        )
    );
}

#[test]
fn hold_time_in_fractions_of_a_second_is_an_error() {
    let text = format!("{BGP}hold_time = \"3s500ms\"\n");
    assert_error(&text, "\"3s500ms\"", &["whole seconds"]);
}

#[test]
fn hold_time_zero_disables_keepalives() {
    let text = format!("{BGP}hold_time = \"0s\"\n");
    let p = valid(&text).config.bgp_peers[0].clone();
    assert_eq!(p.hold_time, Duration::ZERO);
    assert_eq!(p.keepalive_time, Duration::ZERO);
}

#[test]
fn keepalive_longer_than_hold_time_is_an_error() {
    let text = format!("{BGP}hold_time = \"30s\"\nkeepalive_time = \"31s\"\n");
    assert_error(
        &text,
        "\"31s\"",
        &["longer than hold_time 30s", "at most the hold time"],
    );
}

#[test]
fn keepalive_with_zero_hold_time_is_an_error() {
    let text = format!("{BGP}hold_time = \"0s\"\nkeepalive_time = \"10s\"\n");
    assert_error(&text, "\"10s\"", &["longer than hold_time 0s"]);
}

#[test]
fn zero_keepalive_with_nonzero_hold_time_is_an_error() {
    let text = format!("{BGP}hold_time = \"90s\"\nkeepalive_time = \"0s\"\n");
    assert_error(&text, "\"0s\"", &["keepalive_time 0s"]);
}

#[test]
fn keepalive_defaults_to_a_third_of_hold_time_in_whole_seconds() {
    let text = format!("{BGP}hold_time = \"10s\"\n");
    assert_eq!(
        valid(&text).config.bgp_peers[0].keepalive_time,
        Duration::from_secs(3)
    );
}

#[test]
fn asn_zero_is_an_error() {
    let text = BGP.replace("my_asn = 64500", "my_asn = 0");
    assert_error(&text, "0\npeer_asn", &["my_asn 0", "RFC 7607"]);
}

#[test]
fn asn_above_32_bits_is_an_error() {
    let text = BGP.replace("peer_asn = 64500", "peer_asn = 4294967296");
    assert_error(&text, "4294967296", &["1 to 4294967295"]);
}

#[test]
fn as_trans_is_an_error() {
    let text = BGP.replace("peer_asn = 64500", "peer_asn = 23456");
    assert_error(&text, "23456", &["AS_TRANS"]);
}

#[test]
fn largest_four_octet_asn_is_valid() {
    let text = BGP.replace("peer_asn = 64500", "peer_asn = 4294967295");
    assert_eq!(valid(&text).config.bgp_peers[0].peer_asn, u32::MAX);
}

#[test]
fn source_address_of_another_family_is_an_error() {
    let text = format!("{BGP}source_address = \"fd00::3\"\n");
    assert_error(
        &text,
        "\"fd00::3\"",
        &["IPv6", "address 10.0.0.1 is IPv4", "expected an IPv4"],
    );
}

#[test]
fn router_id_must_be_ipv4() {
    let text = format!("{BGP}router_id = \"fd00::3\"\n");
    assert_error(&text, "\"fd00::3\"", &["IPv4"]);
}

#[test]
fn duplicate_peer_with_the_same_node_selectors_is_an_error() {
    let text =
        format!("{BGP}\n[[bgp_peer]]\nmy_asn = 64500\npeer_asn = 64500\naddress = \"10.0.0.1\"\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert_eq!(errors[0].line, text.matches('\n').count());
    assert!(
        errors[0]
            .message
            .contains("duplicate [[bgp_peer]] 10.0.0.1 port 179")
    );
}

#[test]
fn same_peer_for_other_nodes_or_port_is_allowed() {
    let text = format!(
        "{BGP}node_selectors = [{{ match_labels = {{ rack = \"a\" }} }}]\n\n[[bgp_peer]]\nmy_asn = 64500\npeer_asn = 64500\naddress = \"10.0.0.1\"\nnode_selectors = [{{ match_labels = {{ rack = \"b\" }} }}]\n\n[[bgp_peer]]\nmy_asn = 64500\npeer_asn = 64500\naddress = \"10.0.0.1\"\nport = 1179\n"
    );
    assert_eq!(valid(&text).config.bgp_peers.len(), 3);
}

#[test]
fn ebgp_multihop_on_ibgp_warns() {
    let text = format!("{BGP}ebgp_multihop = 3\n");
    let checked = valid(&text);
    assert_eq!(checked.warnings.len(), 1);
    assert!(checked.warnings[0].message.contains("iBGP"));
}

#[test]
fn bfd_on_a_peer_is_kept_without_warnings() {
    let text = format!("{BGP}bfd = {{ detect_multiplier = 5 }}\n");
    let checked = valid(&text);
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    assert_eq!(
        checked.config.bgp_peers[0]
            .bfd
            .as_ref()
            .map(|b| b.detect_multiplier),
        Some(5)
    );
}

#[test]
fn bfd_detect_multiplier_zero_is_an_error() {
    let text = format!("{BGP}bfd = {{ detect_multiplier = 0 }}\n");
    assert_error(&text, "0 }", &["from 1 to 255"]);
}

// ---- durations --------------------------------------------------------------------------------

#[test]
fn malformed_duration_says_which_units_are_expected() {
    let text = format!("{POOL}\n[layer2]\ngratuitous_interval = \"1.5s\"\n");
    assert_error(&text, "\"1.5s\"", &["units ms, s, m, h"]);
}

#[test]
fn zero_duration_where_not_allowed_is_an_error() {
    let text = format!("{POOL}\n[layer2]\ngratuitous_interval = \"0s\"\n");
    assert_error(&text, "\"0s\"", &["positive duration"]);
}

#[test]
fn zero_refresh_interval_turns_refresh_off() {
    let text = format!("{POOL}\n[layer2]\nrefresh_interval = \"0s\"\ngratuitous_count = 5\n");
    let l2 = valid(&text).config.layer2;
    assert_eq!(l2.refresh_interval, None);
    assert_eq!(l2.gratuitous_count, 5);
}

#[test]
fn negative_gratuitous_count_is_an_error() {
    let text = format!("{POOL}\n[layer2]\ngratuitous_count = -1\n");
    assert_error(&text, "-1", &["from 0 to 100"]);
}

#[test]
fn writes_in_flight_default_to_16_and_must_be_1_to_256() {
    let k = "[kubernetes]\nkubeconfig = \"/etc/lb/kubeconfig\"\n";
    let c = valid(&format!("{k}{POOL}")).config;
    assert_eq!(c.kubernetes.map(|k| k.max_writes_in_flight), Some(16));
    let c = valid(&format!("{k}max_writes_in_flight = 64\n{POOL}")).config;
    assert_eq!(c.kubernetes.map(|k| k.max_writes_in_flight), Some(64));
    assert_error(
        &format!("{k}max_writes_in_flight = 0\n{POOL}"),
        "0",
        &["max_writes_in_flight", "from 1 to 256"],
    );
}

#[test]
fn graceful_restart_is_on_for_120s_by_default_and_its_time_is_validated() {
    let c = valid(BGP).config;
    assert_eq!(
        c.bgp_peers[0].graceful_restart,
        Some(Duration::from_secs(120))
    );
    let c = valid(&format!("{BGP}graceful_restart = false\n")).config;
    assert_eq!(c.bgp_peers[0].graceful_restart, None);
    let c = valid(&format!("{BGP}restart_time = \"30s\"\n")).config;
    assert_eq!(
        c.bgp_peers[0].graceful_restart,
        Some(Duration::from_secs(30))
    );
    assert_error(
        &format!("{BGP}restart_time = \"4096s\"\n"),
        "\"4096s\"",
        &["restart_time", "1s to 4095s"],
    );
    assert_error(
        &format!("{BGP}restart_time = \"1500ms\"\n"),
        "\"1500ms\"",
        &["whole seconds"],
    );
}

// ---- cluster ----------------------------------------------------------------------------------

const MEMBERS3: &str =
    "worker-1 = \"10.0.0.3:7946\", worker-2 = \"10.0.0.4:7946\", worker-3 = \"10.0.0.5:7946\"";

fn cluster(extra: &str) -> String {
    format!(
        "[cluster]\nmembers = {{ {MEMBERS3} }}\nsecret_file = \"/etc/lb/cluster.key\"\n{extra}{POOL}"
    )
}

#[test]
fn cluster_table_is_parsed_with_derived_lease() {
    let c = valid(&cluster(
        "heartbeat = \"20ms\"\nelection_timeout = \"200ms\"\nclock_drift = \"10ms\"\n",
    ))
    .config
    .cluster;
    assert_eq!(c.members.len(), 3);
    assert_eq!(
        c.members["worker-2"],
        "10.0.0.4:7946".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        c.secret_file.as_deref(),
        Some(Path::new("/etc/lb/cluster.key"))
    );
    assert_eq!(c.heartbeat, Duration::from_millis(20));
    assert_eq!(c.lease, Duration::from_millis(60));
    assert_eq!(c.election_timeout, Duration::from_millis(200));
    assert_eq!(c.clock_drift, Duration::from_millis(10));
}

#[test]
fn this_host_not_among_members_is_an_error() {
    let ctx = Context {
        hostname: "worker-9".into(),
        check_files: false,
    };
    let text = cluster("");
    assert_error_with(
        &text,
        &ctx,
        "{ worker-1",
        &[
            "this host \"worker-9\" is not among the cluster members",
            "worker-1, worker-2, worker-3",
        ],
    );
}

#[test]
fn duplicate_member_names_are_an_error() {
    let text = format!(
        "[cluster]\nmembers = {{ worker-1 = \"10.0.0.3:7946\", worker-1 = \"10.0.0.4:7946\" }}\nsecret_file = \"/k\"\n{POOL}"
    );
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("duplicate key `worker-1`"),
        "{}",
        errors[0]
    );
    assert_eq!(
        (errors[0].line, errors[0].column),
        position_last(&text, "worker-1")
    );
}

#[test]
fn duplicate_member_addresses_are_an_error() {
    let text = cluster("").replace("10.0.0.5:7946", "10.0.0.4:7946");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert!(
        errors[0]
            .message
            .contains("member worker-3 has the same address 10.0.0.4:7946 as member worker-2")
    );
}

#[test]
fn member_address_without_port_is_an_error() {
    let text = cluster("").replace("10.0.0.5:7946", "10.0.0.5");
    assert_error(&text, "\"10.0.0.5\"", &["IP:PORT"]);
}

#[test]
fn cluster_without_secret_file_is_an_error() {
    let text = cluster("").replace("secret_file = \"/etc/lb/cluster.key\"\n", "");
    assert_error(&text, "[cluster]", &["secret_file"]);
}

#[test]
fn two_member_cluster_warns_that_no_failover_is_possible() {
    let text = format!(
        "[cluster]\nmembers = {{ worker-1 = \"10.0.0.3:7946\", worker-2 = \"10.0.0.4:7946\" }}\nsecret_file = \"/k\"\n{POOL}"
    );
    let checked = valid(&text);
    assert_eq!(checked.warnings.len(), 1);
    let w = &checked.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert!(w.message.starts_with("no failover possible"), "{w}");
    assert!(w.message.contains("witness"), "{w}");
    assert_eq!((w.line, w.column), position(&text, "{ worker-1"));
}

#[test]
fn three_member_cluster_does_not_warn() {
    assert!(valid(&cluster("")).warnings.is_empty());
}

fn voters(extra: &str) -> String {
    format!(
        "[cluster]\nvoters = {{ {MEMBERS3} }}\nsecret_file = \"/etc/lb/cluster.key\"\n{extra}{POOL}"
    )
}

fn host(name: &str) -> Context {
    Context {
        hostname: name.into(),
        check_files: false,
    }
}

#[test]
fn a_host_that_does_not_vote_names_the_voters_and_its_own_address() {
    let text = voters("address = \"10.0.0.21:7946\"\n");
    let c = parse_with(&text, &host("worker-21"))
        .unwrap_or_else(|e| panic!("{e}"))
        .config
        .cluster;
    assert_eq!(c.members.len(), 3, "the voters");
    assert_eq!(c.address, Some("10.0.0.21:7946".parse().unwrap()));
    assert!(c.members_may_join);
    // A voter of the same list has no address of its own there.
    let v = valid(&voters("")).config.cluster;
    assert_eq!(v.address, None);
    assert!(v.members_may_join);
    // `members` keeps its meaning: every host listed, every host votes, none joins.
    let m = valid(&cluster("")).config.cluster;
    assert!(!m.members_may_join);
}

#[test]
fn a_host_neither_voter_nor_with_an_address_is_an_error() {
    assert_error_with(
        &voters(""),
        &host("worker-21"),
        "{ worker-1",
        &[
            "this host \"worker-21\" is not among the cluster voters",
            "address = \"IP:PORT\"",
        ],
    );
}

#[test]
fn a_voter_with_an_address_of_its_own_is_an_error() {
    let text = voters("address = \"10.0.0.21:7946\"\n");
    assert_error(
        &text,
        "\"10.0.0.21:7946\"",
        &["is a voter", "expected no address"],
    );
}

#[test]
fn address_with_members_is_an_error() {
    let text = cluster("address = \"10.0.0.21:7946\"\n");
    assert_error_with(
        &text,
        &host("worker-21"),
        "\"10.0.0.21:7946\"",
        &["expected voters = { ... } instead of members"],
    );
}

#[test]
fn a_member_address_equal_to_a_voters_is_an_error() {
    let text = voters("address = \"10.0.0.4:7946\"\n");
    assert_error_with(
        &text,
        &host("worker-21"),
        "\"10.0.0.4:7946\"\n",
        &["is voter worker-2's"],
    );
}

#[test]
fn an_even_number_of_voters_is_a_warning_as_in_the_middle_of_replacing_one() {
    let text = format!(
        "[cluster]\nvoters = {{ {MEMBERS3}, worker-4 = \"10.0.0.6:7946\" }}\nsecret_file = \"/k\"\n{POOL}"
    );
    let checked = valid(&text);
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
    let w = &checked.warnings[0];
    assert!(
        w.message.contains("4 voters") && w.message.contains("once a voter change is done"),
        "{}",
        w.message
    );
    assert_eq!((w.line, w.column), position(&text, "{ worker-1"));
}

#[test]
fn members_and_voters_together_are_an_error() {
    let text = voters("").replace(
        "[cluster]\n",
        &format!("[cluster]\nmembers = {{ {MEMBERS3} }}\n"),
    );
    assert_error(
        &text,
        "{ worker-1 = \"10.0.0.3:7946\", worker-2 = \"10.0.0.4:7946\", worker-3 = \"10.0.0.5:7946\" }\nsecret",
        &["both members and voters"],
    );
}

#[test]
fn duplicate_voter_addresses_are_an_error() {
    let text = voters("").replace("10.0.0.5:7946", "10.0.0.4:7946");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert!(
        errors[0]
            .message
            .contains("has the same address 10.0.0.4:7946")
    );
}

#[test]
fn heartbeat_below_ten_milliseconds_is_an_error() {
    assert_error(
        &cluster("heartbeat = \"5ms\"\n"),
        "\"5ms\"",
        &["heartbeat 5ms is too short", "at least 10ms"],
    );
}

#[test]
fn election_timeout_not_above_lease_heartbeat_and_drift_is_an_error() {
    // 3 x 50ms + 50ms + 25ms = 225ms: the timeout must be strictly longer.
    assert_error(
        &cluster("election_timeout = \"225ms\"\n"),
        "\"225ms\"",
        &[
            "election_timeout 225ms",
            "more than lease 150ms + heartbeat 50ms + clock_drift 25ms = 225ms",
        ],
    );
    valid(&cluster("election_timeout = \"226ms\"\n"));
}

#[test]
fn slow_heartbeat_against_default_election_timeout_is_an_error() {
    assert_error(
        &cluster("heartbeat = \"100ms\"\n"),
        "\"100ms\"",
        &["election_timeout 300ms is too short for heartbeat 100ms"],
    );
}

// ---- secret files -----------------------------------------------------------------------------

fn files_ctx() -> Context {
    Context {
        hostname: "worker-1".into(),
        check_files: true,
    }
}

fn write_key(dir: &Path, name: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn secret_file_with_mode_600_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "cluster.key", 0o600);
    let text = cluster("").replace("/etc/lb/cluster.key", &key);
    assert!(parse_with(&text, &files_ctx()).is_ok());
}

#[test]
fn missing_secret_file_is_an_error_when_checking_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("absent.key");
    let key = key.to_str().unwrap();
    let text = cluster("").replace("/etc/lb/cluster.key", key);
    assert_error_with(
        &text,
        &files_ctx(),
        &format!("\"{key}"),
        &["does not exist"],
    );
}

#[test]
fn secret_file_readable_by_group_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "cluster.key", 0o640);
    let text = cluster("").replace("/etc/lb/cluster.key", &key);
    assert_error_with(
        &text,
        &files_ctx(),
        &format!("\"{key}"),
        &["readable by group or others", "mode 0640", "chmod 600"],
    );
}

#[test]
fn password_file_readable_by_others_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "peer.key", 0o604);
    let text = format!("{BGP}password_file = \"{key}\"\n");
    assert_error_with(
        &text,
        &files_ctx(),
        &format!("\"{key}"),
        &["password_file", "readable by group or others"],
    );
}

#[test]
fn empty_secret_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.key");
    std::fs::write(&path, "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = path.to_str().unwrap();
    let text = cluster("").replace("/etc/lb/cluster.key", key);
    assert_error_with(&text, &files_ctx(), &format!("\"{key}"), &["is empty"]);
}

#[test]
fn file_checks_are_skipped_when_not_requested() {
    let text = format!("{BGP}password_file = \"/nonexistent/peer.key\"\n");
    let p = valid(&text).config.bgp_peers[0].clone();
    assert_eq!(
        p.password_file.as_deref(),
        Some(Path::new("/nonexistent/peer.key"))
    );
}

// ---- static services --------------------------------------------------------------------------

#[test]
fn static_service_is_parsed() {
    let text = format!(
        "{POOL}\n[[service]]\nname = \"api\"\npool = \"p\"\nip = \"10.0.0.10\"\nassign = true\nports = [\"6443/tcp\", \"53/UDP\"]\n"
    );
    let s = valid(&text).config.services[0].clone();
    assert_eq!(s.name, "api");
    assert_eq!(s.pool, "p");
    assert_eq!(s.ip, Some(ip("10.0.0.10")));
    assert!(s.assign);
    assert_eq!(s.ports.len(), 2);
    assert_eq!(s.ports[1].protocol, Protocol::Udp);
}

#[test]
fn static_service_with_only_an_ip_gets_the_pool_holding_it() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\nip = \"10.0.0.10\"\n");
    assert_eq!(valid(&text).config.services[0].pool, "p");
}

#[test]
fn static_service_with_only_a_pool_has_no_ip_yet() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\npool = \"p\"\n");
    assert_eq!(valid(&text).config.services[0].ip, None);
}

#[test]
fn static_service_ip_outside_its_pool_is_an_error() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\npool = \"p\"\nip = \"10.0.1.10\"\n");
    assert_error(
        &text,
        "\"10.0.1.10\"",
        &["outside pool \"p\"", "10.0.0.0-10.0.0.255"],
    );
}

#[test]
fn static_service_ip_in_no_pool_is_an_error() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\nip = \"10.0.1.10\"\n");
    assert_error(&text, "\"10.0.1.10\"", &["in no pool"]);
}

#[test]
fn static_service_ip_of_a_family_the_pool_lacks_is_an_error() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\npool = \"p\"\nip = \"fd00::10\"\n");
    assert_error(
        &text,
        "\"fd00::10\"",
        &["is IPv6 but pool \"p\" has no IPv6 addresses"],
    );
}

#[test]
fn static_service_naming_an_unknown_pool_is_an_error() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\npool = \"q\"\n");
    assert_error(
        &text,
        "\"q\"",
        &["pool \"q\" is not defined", "one of \"p\""],
    );
}

#[test]
fn static_service_without_pool_or_ip_is_an_error() {
    let text = format!("{POOL}\n[[service]]\nname = \"api\"\n");
    assert_error(&text, "[[service]]", &["pool, ip, or both"]);
}

#[test]
fn duplicate_service_names_are_an_error() {
    let text = format!(
        "{POOL}\n[[service]]\nname = \"api\"\npool = \"p\"\n\n[[service]]\nname = \"api\"\npool = \"p\"\n"
    );
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("duplicate service name \"api\""));
    assert_eq!(errors[0].line, text.matches('\n').count() - 1);
}

#[test]
fn static_services_sharing_an_ip_on_the_same_port_is_an_error() {
    let text = format!(
        "{POOL}\n[[service]]\nname = \"a\"\nip = \"10.0.0.10\"\nports = [\"80/tcp\"]\n\n[[service]]\nname = \"b\"\nip = \"10.0.0.10\"\nports = [\"443/tcp\", \"80/tcp\"]\n"
    );
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .contains("port 80/tcp is also used by service \"a\"")
    );
    let ok = text.replace("[\"443/tcp\", \"80/tcp\"]", "[\"443/tcp\", \"80/udp\"]");
    assert_eq!(valid(&ok).config.services.len(), 2);
}

#[test]
fn bad_service_port_is_an_error() {
    let text = format!("{POOL}\n[[service]]\nname = \"a\"\npool = \"p\"\nports = [\"6443\"]\n");
    assert_error(&text, "\"6443\"", &["PORT/PROTOCOL"]);
}

// ---- metrics and log --------------------------------------------------------------------------

#[test]
fn metrics_listen_is_parsed() {
    let text = format!("{POOL}\n[metrics]\nlisten = \"[::1]:9100\"\n");
    assert_eq!(
        valid(&text).config.metrics.listen,
        "[::1]:9100".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn bad_metrics_listen_address_is_an_error() {
    let text = format!("{POOL}\n[metrics]\nlisten = \"localhost:7472\"\n");
    assert_error(&text, "\"localhost:7472\"", &["IP:PORT"]);
}

#[test]
fn bad_log_level_is_an_error() {
    let text = format!("{POOL}\n[log]\nlevel = \"verbose\"\n");
    assert_error(&text, "\"verbose\"", &["error, warn, info, debug or trace"]);
}

#[test]
fn bad_log_format_is_an_error() {
    let text = format!("{POOL}\n[log]\nformat = \"json\"\n");
    assert_error(&text, "\"json\"", &["auto, text or journald"]);
}

#[test]
fn log_settings_are_parsed() {
    let text = format!("{POOL}\n[log]\nlevel = \"debug\"\nformat = \"journald\"\n");
    let log = valid(&text).config.log;
    assert_eq!(
        (log.level, log.format),
        (LogLevel::Debug, LogFormat::Journald)
    );
}

// ---- files and the check-config entry point ---------------------------------------------------

#[test]
fn load_file_reports_an_unreadable_file_as_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = load_file(&path, &ctx()).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].file, path);
    assert!(err.to_string().contains("cannot read the config file"));
}

#[test]
fn load_file_labels_diagnostics_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, POOL.replace("layer2", "l2")).unwrap();
    let err = load_file(&path, &ctx()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:4:12: error:", path.display())),
        "{err}"
    );
}

#[test]
fn summary_counts_pools_peers_and_members() {
    let text = cluster("") + &BGP.replace("172.19.100.0/24", "172.19.0.0/24");
    let config = valid(&text).config;
    assert_eq!(
        summary(Path::new("/etc/lb.toml"), &config),
        "/etc/lb.toml: OK (2 pools, 1 BGP peer, 3 cluster members)"
    );
}

#[test]
fn check_config_main_exits_zero_on_valid_and_one_on_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, POOL).unwrap();
    assert_eq!(check_config_main(&good, &ctx()), ExitCode::SUCCESS);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\n").unwrap();
    assert_eq!(check_config_main(&bad, &ctx()), ExitCode::FAILURE);
}

#[test]
fn diagnostics_display_one_per_line() {
    let text = format!("{POOL}\n[log]\nlevel = \"x\"\nformat = \"y\"\n");
    let err = parse_with(&text, &ctx()).unwrap_err();
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 2);
    assert!(
        shown
            .lines()
            .all(|l| l.starts_with("/etc/lb.toml:") && l.contains(": error: "))
    );
    // Diagnostics is a std::error::Error, usable with `?` in a binary.
    let _: &dyn std::error::Error = &err;
}

#[test]
fn witness_without_cluster_warns() {
    let text = format!("[node]\nrole = \"witness\"\n{POOL}");
    let checked = valid(&text);
    assert_eq!(checked.warnings.len(), 1);
    assert!(checked.warnings[0].message.contains("witness"));
}

#[test]
fn missing_kubeconfig_is_an_error_when_checking_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let shown = path.to_str().unwrap();
    let text = format!("[kubernetes]\nkubeconfig = \"{shown}\"\n{POOL}");
    assert_error_with(
        &text,
        &files_ctx(),
        &format!("\"{shown}"),
        &["does not exist"],
    );
    std::fs::write(&path, "apiVersion: v1\n").unwrap();
    assert!(parse_with(&text, &files_ctx()).is_ok());
}

#[test]
fn context_from_system_reads_the_hostname_and_checks_files() {
    let ctx = Context::from_system();
    assert!(ctx.check_files);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if !kernel.trim().is_empty() {
        assert_eq!(ctx.hostname, kernel.trim());
    }
}

#[test]
fn sections_that_deserialize_are_checked_even_when_another_does_not() {
    let text = format!("[node]\nbogus = 1\n{POOL}\n[log]\nlevel = \"loud\"\n");
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 2, "{}", Diagnostics(errors.clone()));
    assert!(errors[0].message.contains("unknown key `bogus`"));
    assert!(errors[1].message.contains("log level \"loud\""));
}

#[test]
fn a_broken_pool_causes_no_follow_on_errors_in_services() {
    let text = "[[pool]]\nname = \"p\"\nprotocol = \"layer2\"\naddresses = [\"10.0.0.0/24\"]\ncolour = \"red\"\n\n[[service]]\nname = \"api\"\npool = \"p\"\nip = \"10.0.0.10\"\n";
    let errors = errors_with(text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
    assert!(errors[0].message.contains("unknown key `colour`"));
}

#[test]
fn a_broken_peer_causes_no_follow_on_errors_in_advertisements() {
    let text = format!(
        "{BGP}colour = \"red\"\n\n[[pool]]\nname = \"c\"\nprotocol = \"bgp\"\naddresses = [\"172.20.0.0/24\"]\n[[pool.bgp_advertisement]]\npeers = [\"10.0.0.1\"]\n"
    );
    let errors = errors_with(&text, &ctx());
    assert_eq!(errors.len(), 1, "{}", Diagnostics(errors.clone()));
}

#[test]
fn an_invalid_peer_still_counts_as_known_for_advertisements() {
    let text = BGP.replace("my_asn = 64500", "my_asn = 0")
        + "\n[[pool.bgp_advertisement]]\npeers = [\"10.0.0.1\"]\n";
    assert_error(&text, "0\npeer_asn", &["my_asn 0"]);
}
