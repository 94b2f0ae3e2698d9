//! From text to a validated [`Config`]: parse with error recovery, deserialize each section
//! (and each `[[pool]]`, `[[bgp_peer]]`, `[[service]]`) on its own so one mistake does not
//! hide the next, then check everything, collecting every error.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::{Diagnostics, Sink};
use super::raw::*;
use super::types::*;
use super::values::{
    AnyCommunity, Dur, covering_prefix_len, max_prefix, parse_community, parse_duration,
    parse_ip_range, parse_service_port,
};
use super::{Checked, Context};
use crate::model::{
    BgpAdvertisement, IpFamily, IpRange, LabelExpression, LabelOperator, NodeSelector, Pool,
    PoolProtocol, ServiceAllocation, ServicePort,
};

pub(crate) fn check(text: &str, file: &Path, ctx: &Context) -> Result<Checked, Diagnostics> {
    let mut sink = Sink::new(file, text);
    let (root, parse_errors) = DeTable::parse_recoverable(text);
    if !parse_errors.is_empty() {
        let errors = parse_errors
            .iter()
            .map(|e| (e.span().unwrap_or(0..0), e.message().to_string()))
            .collect();
        for (span, message) in syntax_errors(text, errors) {
            sink.error(span, message);
        }
        return Err(Diagnostics(sink.into_sorted()));
    }
    // Sections that failed to deserialize are left out, and checks that refer to them are
    // skipped, so the remaining sections are still checked without follow-on errors.
    let raw = split_sections(root.into_inner(), text, &mut sink);
    let mut checker = Checker {
        sink,
        ctx,
        failed: raw.failed.clone(),
    };
    let config = checker.config(raw);
    let Checker { sink, .. } = checker;
    if sink.has_errors() {
        Err(Diagnostics(sink.into_sorted()))
    } else {
        Ok(Checked {
            config,
            warnings: sink.into_sorted(),
        })
    }
}

/// One diagnostic per TOML syntax error. The parser recovers and goes on, but inside an
/// unclosed array, inline table or multi-line string everything up to where it gives up is
/// misread (a following `[node]` as an array element, `name` as a misspelt `nan`...): those
/// follow-on errors are dropped and the unclosed one is reported where it was opened. Then
/// only the first error of a line is kept: the rest of that line is read out of step.
fn syntax_errors(
    text: &str,
    mut errors: Vec<(Range<usize>, String)>,
) -> Vec<(Range<usize>, String)> {
    errors.sort_by_key(|(span, _)| span.start);
    let unclosed = |m: &str| {
        [
            "unclosed array",
            "unclosed inline table",
            "invalid multi-line",
        ]
        .iter()
        .any(|p| m.starts_with(p))
    };
    let mut i = 0;
    while i < errors.len() {
        let at = errors[i].0.start;
        if unclosed(&errors[i].1)
            && let Some(open) = unclosed_opening(text, at)
            && open < at
        {
            let mut message = std::mem::take(&mut errors[i].1);
            if message.starts_with("invalid multi-line")
                && let Some(quotes) = text.get(open..open + 3)
                && (quotes == "\"\"\"" || quotes == "'''")
            {
                message = format!("unclosed multi-line string, expected {quotes} to end it");
            }
            errors.retain(|(span, _)| span.start < open || span.start > at);
            let pos = errors.partition_point(|(span, _)| span.start < open);
            errors.insert(pos, (open..open + 1, message));
            i = pos;
        }
        i += 1;
    }
    let mut lines_seen = std::collections::BTreeSet::new();
    errors
        .into_iter()
        .filter(|(span, _)| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            lines_seen.insert(before.iter().filter(|&&b| b == b'\n').count())
        })
        .map(|(span, message)| {
            bare_value_message(text, span.clone(), &message).unwrap_or_else(|| {
                let m = toml_message(&message, &snippet(text, &span));
                (span, m)
            })
        })
        .collect()
}

/// Where the construct still open at byte `at` began: the outermost unclosed `[` or `{` of a
/// value, or an unterminated multi-line string. A small TOML lexer: strings, comments and
/// table headers (`[x]`, `[[x]]` at the start of a line outside any value) are skipped.
fn unclosed_opening(text: &str, at: usize) -> Option<usize> {
    let b = text.as_bytes();
    let at = at.min(b.len());
    let mut open: Vec<usize> = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < at {
        let c = b[i];
        match c {
            b'#' => {
                while i < at && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' if b[i..].starts_with(&[c, c, c]) => {
                let start = i;
                i += 3;
                loop {
                    if i >= at {
                        return Some(start);
                    }
                    if c == b'"' && b[i] == b'\\' {
                        i += 2;
                    } else if b[i..].starts_with(&[c, c, c]) {
                        i += 3;
                        // Up to two more quotes belong to the string's content.
                        while i < at && b[i] == c {
                            i += 1;
                        }
                        break;
                    } else {
                        i += 1;
                    }
                }
                line_start = false;
                continue;
            }
            b'"' | b'\'' => {
                // One-line strings end at the line's end even when unterminated.
                i += 1;
                while i < at && b[i] != c && b[i] != b'\n' {
                    if c == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i < at && b[i] == c {
                    i += 1;
                }
                line_start = false;
                continue;
            }
            b'[' if line_start && open.is_empty() => {
                // A table header: to the end of its line (a header holds no values).
                while i < at && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => open.push(i),
            b']' | b'}' => {
                open.pop();
            }
            b'\n' => {
                line_start = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        if !c.is_ascii_whitespace() {
            line_start = false;
        }
        i += 1;
    }
    open.first().copied()
}

/// An unquoted value the parser took for a number, `nan`/`inf` or a bare string (`name =
/// node-1`, `listen = 127.0.0.1:7472`): say it needs quotes, pointing at the whole value.
fn bare_value_message(
    text: &str,
    span: Range<usize>,
    message: &str,
) -> Option<(Range<usize>, String)> {
    if ![
        "invalid float",
        "invalid integer",
        "string values must be quoted",
    ]
    .iter()
    .any(|p| message.starts_with(p))
    {
        return None;
    }
    let b = text.as_bytes();
    let stop = |c: u8| c.is_ascii_whitespace() || b"=,[]{}#\"'".contains(&c);
    let mut start = span.start.min(b.len());
    while start > 0 && !stop(b[start - 1]) {
        start -= 1;
    }
    let mut end = span.start.min(b.len());
    while end < b.len() && !stop(b[end]) {
        end += 1;
    }
    let word = text.get(start..end)?;
    // A number with a typo stays a number error; a word or an address is a missing quote.
    let numeric = word
        .chars()
        .all(|c| c.is_ascii_digit() || "+-._eE".contains(c))
        && word.matches('.').count() <= 1;
    if word.is_empty() || numeric {
        return None;
    }
    Some((
        start..end,
        format!("`{word}` is not a TOML value: expected a quoted string, \"{word}\""),
    ))
}

/// Rewords toml/serde messages so they, too, say what was expected; `snippet` is the text
/// the error points at.
fn toml_message(message: &str, snippet: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing required key {rest}: expected it in this table");
    }
    if message.starts_with("unknown field") {
        return message.replacen("unknown field", "unknown key", 1);
    }
    if message.starts_with("duplicate key") {
        let key = snippet.trim();
        return format!("duplicate key `{key}`: expected each key once per table");
    }
    // serde names our private structs and Rust types; say it in TOML terms.
    let mut out = message.to_string();
    if let Some(i) = out.find("expected struct Raw") {
        out.replace_range(i.., "expected a table");
    }
    for (rust, toml) in [
        ("expected i64", "expected an integer"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected an array"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

/// The source text under a span, clamped to the text and to character boundaries.
fn snippet(text: &str, span: &Range<usize>) -> String {
    let mut start = span.start.min(text.len());
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text[start..end].chars().take(80).collect()
}

#[derive(Default)]
struct RawConfig {
    node: Option<S<RawNode>>,
    kubernetes: Option<S<RawKubernetes>>,
    cluster: Option<S<RawCluster>>,
    layer2: Option<RawLayer2>,
    bgp_communities: Option<RawCommunities>,
    pools: Option<Vec<S<RawPool>>>,
    bgp_peers: Vec<S<RawPeer>>,
    services: Vec<S<RawService>>,
    metrics: Option<RawMetrics>,
    log: Option<RawLog>,
    /// Sections (some of) which did not deserialize; their errors are already reported.
    failed: Vec<String>,
}

fn deserialize<T: DeserializeOwned>(
    value: toml::Spanned<DeValue<'_>>,
    text: &str,
    sink: &mut Sink,
) -> Option<T> {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or(span);
            let message = toml_message(e.message(), &snippet(text, &span));
            sink.error(span, message);
            None
        }
    }
}

fn deserialize_each<T: DeserializeOwned>(
    key: &str,
    value: toml::Spanned<DeValue<'_>>,
    text: &str,
    sink: &mut Sink,
) -> Vec<T> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .iter()
            .cloned()
            .filter_map(|item| deserialize(item, text, sink))
            .collect(),
        other => {
            sink.error(
                span,
                format!(
                    "{key} is a {}: expected an array of tables written as [[{key}]]",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    }
}

fn split_sections(root: DeTable<'_>, text: &str, sink: &mut Sink) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in root {
        let errors_before = sink.found.len();
        match key.get_ref().as_ref() {
            "node" => raw.node = deserialize(value, text, sink),
            "kubernetes" => raw.kubernetes = deserialize(value, text, sink),
            "cluster" => raw.cluster = deserialize(value, text, sink),
            "layer2" => raw.layer2 = deserialize(value, text, sink),
            "bgp_communities" => raw.bgp_communities = deserialize(value, text, sink),
            "pool" => raw.pools = Some(deserialize_each("pool", value, text, sink)),
            "bgp_peer" => raw.bgp_peers = deserialize_each("bgp_peer", value, text, sink),
            "service" => raw.services = deserialize_each("service", value, text, sink),
            "metrics" => raw.metrics = deserialize(value, text, sink),
            "log" => raw.log = deserialize(value, text, sink),
            other => sink.error(
                key.span(),
                format!(
                    "unknown key `{other}`: expected one of {}",
                    SECTIONS
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
        if sink.found.len() > errors_before {
            raw.failed.push(key.get_ref().to_string());
        }
    }
    raw
}

struct Checker<'a> {
    sink: Sink<'a>,
    ctx: &'a Context,
    failed: Vec<String>,
}

/// The `[[bgp_peer]]`s as advertisements see them.
struct KnownPeers {
    /// Addresses of every peer whose address parsed, valid or not.
    addresses: Vec<IpAddr>,
    valid: Vec<BgpPeer>,
}

/// Where a pool range came from, for overlap messages.
struct RangeSite {
    range: IpRange,
    pool: usize,
    text: String,
    span: Range<usize>,
}

fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

impl Checker<'_> {
    /// Whether `section` deserialized completely, so checks may rely on its contents.
    fn complete(&self, section: &str) -> bool {
        !self.failed.iter().any(|f| f == section)
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let node = self.node(raw.node.as_ref());
        let kubernetes = raw.kubernetes.as_ref().map(|k| self.kubernetes(k));
        let mut cluster = self.cluster(raw.cluster.as_ref(), &node);
        cluster.member_nodes = raw
            .cluster
            .as_ref()
            .and_then(|c| self.member_nodes(c, kubernetes.is_some()));
        let layer2 = self.layer2(raw.layer2.unwrap_or_default());
        let aliases = self.aliases(raw.bgp_communities.unwrap_or_default());
        let bgp_peers = self.peers(&raw.bgp_peers);
        // Advertisements refer to peers by address: count a peer as present even when
        // another of its keys is wrong, so that mistake is not reported twice.
        let known_peers = KnownPeers {
            addresses: raw
                .bgp_peers
                .iter()
                .filter_map(|p| p.get_ref().address.get_ref().trim().parse().ok())
                .collect(),
            valid: bgp_peers.clone(),
        };
        let pools = match &raw.pools {
            Some(pools) => self.pools(pools, &aliases, &known_peers),
            None => {
                self.sink.error(
                    0..0,
                    "no [[pool]] is defined: expected at least one [[pool]] with a name, protocol and addresses",
                );
                Vec::new()
            }
        };
        let services = self.services(&raw.services, &pools);
        let metrics = self.metrics(raw.metrics.unwrap_or_default());
        let log = self.log(raw.log.unwrap_or_default());
        Config {
            node,
            kubernetes,
            cluster,
            layer2,
            pools: pools.into(),
            bgp_peers,
            services,
            metrics,
            log,
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    fn duration(&mut self, key: &str, value: &S<String>, allow_zero: bool) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.sink.error(
                    value.span(),
                    format!("{key} 0s is not allowed: expected a positive duration"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.sink.error(value.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    fn opt_duration(
        &mut self,
        key: &str,
        value: Option<&S<String>>,
        allow_zero: bool,
        default: Duration,
    ) -> Duration {
        value
            .and_then(|v| self.duration(key, v, allow_zero))
            .unwrap_or(default)
    }

    fn int<T: TryFrom<i64>>(&mut self, key: &str, value: &S<i64>, min: i64, max: i64) -> Option<T> {
        let v = *value.get_ref();
        if v < min || v > max {
            self.sink.error(
                value.span(),
                format!("{key} {v} is out of range: expected a number from {min} to {max}"),
            );
            return None;
        }
        T::try_from(v).ok()
    }

    fn ip(&mut self, key: &str, value: &S<String>) -> Option<IpAddr> {
        match value.get_ref().trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.sink.error(
                    value.span(),
                    format!(
                        "{key} {:?} is not an IP address: expected an IPv4 or IPv6 address such as \"10.10.100.1\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn absolute_path(&mut self, key: &str, value: &S<String>) -> Option<PathBuf> {
        let path = PathBuf::from(value.get_ref());
        if path.is_absolute() {
            Some(path)
        } else {
            self.sink.error(
                value.span(),
                format!(
                    "{key} {:?} is not an absolute path: expected a path starting with /",
                    value.get_ref()
                ),
            );
            None
        }
    }

    /// A key file (cluster secret, TCP-MD5 password): must exist, be a non-empty regular file,
    /// and not be readable by group or others.
    fn secret_file(&mut self, key: &str, value: &S<String>) -> Option<PathBuf> {
        let path = self.absolute_path(key, value)?;
        if !self.ctx.check_files {
            return Some(path);
        }
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let problem = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "{key} {shown} does not exist: expected a file holding the key, mode 0600"
            )),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // An unprivileged `lbctl check-config` cannot see into /etc/lb; the daemon's
                // own check at start-up still can, so this is not a reason to fail.
                self.sink.warning(
                    value.span(),
                    format!("{key} {shown} could not be checked ({e}): expected to run the check as root or as the daemon's user to verify it"),
                );
                return Some(path);
            }
            Err(e) => Some(format!(
                "{key} {shown} cannot be inspected ({e}): expected a readable regular file"
            )),
            Ok(m) if !m.is_file() => Some(format!(
                "{key} {shown} is not a regular file: expected a file holding the key, mode 0600"
            )),
            Ok(m) if m.permissions().mode() & 0o044 != 0 => Some(format!(
                "{key} {shown} is readable by group or others (mode {:04o}): expected mode 0600 or stricter (chmod 600 {shown})",
                m.permissions().mode() & 0o7777
            )),
            Ok(m) if m.len() == 0 => Some(format!(
                "{key} {shown} is empty: expected a file holding the key"
            )),
            Ok(_) => None,
        };
        match problem {
            Some(p) => {
                self.sink.error(value.span(), p);
                None
            }
            None => Some(path),
        }
    }

    fn selectors(&mut self, raw: Option<&Vec<S<RawSelector>>>) -> Vec<NodeSelector> {
        raw.map(|list| list.iter().map(|s| self.selector(s.get_ref())).collect())
            .unwrap_or_default()
    }

    /// A label key (and value) that Kubernetes would refuse can match no object: an error,
    /// not a selector that silently never matches.
    fn label_syntax(&mut self, key: &S<String>, value: Option<&S<String>>) {
        let k = key.get_ref();
        if let Some(why) = invalid_label_key(k).filter(|_| !k.is_empty()) {
            self.sink.error(
                key.span(),
                format!("label key {k:?} {why}: expected [prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            );
        }
        if let Some(v) = value
            && !label_word_ok(v.get_ref())
        {
            self.sink.error(
                v.span(),
                format!("{:?} is not a label value: expected at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v.get_ref()),
            );
        }
    }

    fn selector(&mut self, raw: &RawSelector) -> NodeSelector {
        let mut out = NodeSelector::default();
        for (k, v) in raw.match_labels.iter().flatten() {
            if k.get_ref().is_empty() {
                self.sink.error(
                    k.span(),
                    "empty label key in match_labels: expected a label name such as \"rack\"",
                );
            }
            self.label_syntax(k, Some(v));
            out.match_labels
                .insert(k.get_ref().clone(), v.get_ref().clone());
        }
        for e in raw.match_expressions.iter().flatten() {
            let e = e.get_ref();
            if e.key.get_ref().is_empty() {
                self.sink.error(
                    e.key.span(),
                    "empty key in match_expressions: expected a label name such as \"zone\"",
                );
            }
            let operator = match e.operator.get_ref().as_str() {
                "In" => LabelOperator::In,
                "NotIn" => LabelOperator::NotIn,
                "Exists" => LabelOperator::Exists,
                "DoesNotExist" => LabelOperator::DoesNotExist,
                other => {
                    self.sink.error(
                        e.operator.span(),
                        format!("operator {other:?} is not a label selector operator: expected In, NotIn, Exists or DoesNotExist"),
                    );
                    continue;
                }
            };
            self.label_syntax(&e.key, None);
            for v in e.values.iter().flat_map(|v| v.get_ref()) {
                if !label_word_ok(v.get_ref()) {
                    self.sink.error(v.span(), format!("{:?} is not a label value: expected at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v.get_ref()));
                }
            }
            let values: Vec<String> = e
                .values
                .as_ref()
                .map(|v| v.get_ref().iter().map(|s| s.get_ref().clone()).collect())
                .unwrap_or_default();
            let needs_values = matches!(operator, LabelOperator::In | LabelOperator::NotIn);
            if needs_values && values.is_empty() {
                self.sink.error(
                    e.values.as_ref().map_or(e.operator.span(), |v| v.span()),
                    format!(
                        "operator {} needs values: expected a non-empty values list",
                        e.operator.get_ref()
                    ),
                );
            } else if !needs_values && !values.is_empty() {
                self.sink.error(
                    e.values.as_ref().map_or(e.operator.span(), |v| v.span()),
                    format!(
                        "operator {} takes no values: expected values to be absent or empty",
                        e.operator.get_ref()
                    ),
                );
            }
            out.match_expressions.push(LabelExpression {
                key: e.key.get_ref().clone(),
                operator,
                values,
            });
        }
        out
    }

    // ---- [node], [kubernetes] -------------------------------------------------------------

    fn node(&mut self, raw: Option<&S<RawNode>>) -> NodeConfig {
        let empty = RawNode::default();
        let (node, span) = raw.map_or((&empty, 0..0), |n| (n.get_ref(), n.span()));
        let name = match &node.name {
            Some(name) => {
                if let Some(why) = invalid_node_name(name.get_ref()) {
                    self.sink.error(
                        name.span(),
                        format!(
                            "node name {:?} {why}: expected a Kubernetes node name (lowercase letters, digits, '-' and '.')",
                            name.get_ref()
                        ),
                    );
                }
                name.get_ref().clone()
            }
            None => {
                // kubelet names the Node after the lowercased hostname.
                let host = self.ctx.hostname.trim().to_ascii_lowercase();
                if host.is_empty() {
                    self.sink.error(
                        span,
                        "cannot determine this host's name: expected [node] name = \"<Kubernetes node name>\"",
                    );
                } else if let Some(why) = invalid_node_name(&host) {
                    self.sink.error(
                        span,
                        format!(
                            "hostname {host:?} {why}: expected [node] name = \"<Kubernetes node name>\""
                        ),
                    );
                }
                host
            }
        };
        let role = match node.role.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
            None | Some(("member", _)) => Role::Member,
            Some(("witness", _)) => Role::Witness,
            Some((other, span)) => {
                self.sink.error(
                    span,
                    format!("role {other:?} is unknown: expected \"member\" or \"witness\""),
                );
                Role::Member
            }
        };
        let state_dir = node
            .state_dir
            .as_ref()
            .and_then(|d| self.absolute_path("state_dir", d))
            .unwrap_or_else(|| PathBuf::from("/var/lib/lb"));
        NodeConfig {
            name,
            role,
            state_dir,
        }
    }

    fn kubernetes(&mut self, raw: &S<RawKubernetes>) -> KubernetesConfig {
        let k = raw.get_ref();
        let kubeconfig = self
            .absolute_path("kubeconfig", &k.kubeconfig)
            .unwrap_or_default();
        if self.ctx.check_files && kubeconfig.is_absolute() {
            match std::fs::metadata(&kubeconfig) {
                Ok(m) if m.is_file() => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => self.sink.warning(
                    k.kubeconfig.span(),
                    format!(
                        "kubeconfig {} could not be checked ({e}): expected to run the check as root or as the daemon's user to verify it",
                        kubeconfig.display()
                    ),
                ),
                _ => self.sink.error(
                    k.kubeconfig.span(),
                    format!(
                        "kubeconfig {} does not exist or is not a file: expected a kubeconfig with this host's credentials",
                        kubeconfig.display()
                    ),
                ),
            }
        }
        let load_balancer_class = k.load_balancer_class.as_ref().map(|c| {
            if c.get_ref().trim().is_empty() {
                self.sink.error(
                    c.span(),
                    "load_balancer_class is empty: expected a class such as \"example.com/lb\", or no key for Services without a class",
                );
            }
            c.get_ref().clone()
        });
        let max_writes_in_flight = k
            .max_writes_in_flight
            .as_ref()
            .and_then(|n| self.int::<usize>("max_writes_in_flight", n, 1, 256))
            .unwrap_or(KubernetesConfig::DEFAULT_MAX_WRITES_IN_FLIGHT);
        KubernetesConfig {
            kubeconfig,
            load_balancer_class,
            ignore_exclude_label: k.ignore_exclude_label.unwrap_or(false),
            max_writes_in_flight,
        }
    }

    // ---- [cluster] ------------------------------------------------------------------------

    fn cluster(&mut self, raw: Option<&S<RawCluster>>, node: &NodeConfig) -> ClusterConfig {
        let Some(raw) = raw else {
            if node.role == Role::Witness {
                self.sink.warning(
                    0..0,
                    "this host is a witness but there is no [cluster]: it will never announce anything; expected a [cluster] table listing the members it votes with",
                );
            }
            return ClusterConfig {
                members: BTreeMap::from([(
                    node.name.clone(),
                    SocketAddr::from(([127, 0, 0, 1], ClusterConfig::DEFAULT_PORT)),
                )]),
                address: None,
                members_may_join: false,
                member_nodes: None,
                secret_file: None,
                heartbeat: ClusterConfig::DEFAULT_HEARTBEAT,
                election_timeout: ClusterConfig::DEFAULT_ELECTION_TIMEOUT,
                clock_drift: ClusterConfig::DEFAULT_CLOCK_DRIFT,
                lease: 3 * ClusterConfig::DEFAULT_HEARTBEAT,
            };
        };
        let c = raw.get_ref();
        let mut members = BTreeMap::new();
        let mut by_addr: HashMap<SocketAddr, String> = HashMap::new();
        // `members`: every host, all voting (the original shape). `voters`: the few hosts
        // that vote; every other host names only them and its own `address`.
        let (hosts, key) = match (&c.members, &c.voters) {
            (Some(m), None) => (m, "members"),
            (None, Some(v)) => (v, "voters"),
            (Some(_), Some(v)) => {
                self.sink.error(
                    v.span(),
                    "[cluster] has both members and voters: expected one of them (members: every host votes; voters: only these vote, other hosts join with their own address)",
                );
                (v, "voters")
            }
            (None, None) => {
                self.sink.error(
                    raw.span(),
                    "[cluster] has no voters: expected voters = { a = \"10.10.100.3:7946\", ... } (or members, every host voting)",
                );
                return self.cluster(None, node);
            }
        };
        let is_voters = key == "voters";
        if hosts.get_ref().is_empty() {
            self.sink.error(
                hosts.span(),
                format!("{key} is empty: expected e.g. {{ worker-1 = \"10.10.100.3:7946\" }}"),
            );
        }
        for (name, addr) in hosts.get_ref() {
            if let Some(why) = invalid_node_name(name.get_ref()) {
                self.sink.error(
                    name.span(),
                    format!(
                        "member name {:?} {why}: expected a Kubernetes node name",
                        name.get_ref()
                    ),
                );
            }
            let parsed = match addr.get_ref().parse::<SocketAddr>() {
                Ok(a) if a.ip().is_unspecified() || a.ip().is_multicast() || a.port() == 0 => {
                    self.sink.error(
                        addr.span(),
                        format!(
                            "member {} address {a} is not a host address: expected a unicast IP and a non-zero port",
                            name.get_ref()
                        ),
                    );
                    continue;
                }
                Ok(a) => a,
                Err(_) => {
                    self.sink.error(
                        addr.span(),
                        format!(
                            "member {} address {:?} is not IP:PORT: expected e.g. \"10.10.100.3:7946\" or \"[fd00::3]:7946\"",
                            name.get_ref(),
                            addr.get_ref()
                        ),
                    );
                    continue;
                }
            };
            if let Some(other) = by_addr.get(&parsed) {
                self.sink.error(
                    addr.span(),
                    format!(
                        "member {} has the same address {parsed} as member {other}: expected a distinct address per member",
                        name.get_ref()
                    ),
                );
            } else {
                by_addr.insert(parsed, name.get_ref().clone());
            }
            members.insert(name.get_ref().clone(), parsed);
        }
        let listed = hosts.get_ref().keys().any(|k| k.get_ref() == &node.name);
        let address = match &c.address {
            None => None,
            Some(a) if !is_voters => {
                self.sink.error(
                    a.span(),
                    "address is for a host that does not vote: expected voters = { ... } instead of members (with members every host is listed and votes)",
                );
                None
            }
            Some(a) if listed => {
                self.sink.error(
                    a.span(),
                    format!(
                        "this host {:?} is a voter: its address is the one in voters; expected no address here",
                        node.name
                    ),
                );
                None
            }
            Some(a) => {
                match a.get_ref().parse::<SocketAddr>() {
                    Ok(p) if p.ip().is_unspecified() || p.ip().is_multicast() || p.port() == 0 => {
                        self.sink.error(
                        a.span(),
                        format!("address {p} is not a host address: expected a unicast IP and a non-zero port"),
                    );
                        None
                    }
                    Ok(p) => {
                        if let Some(other) = by_addr.get(&p) {
                            self.sink.error(
                            a.span(),
                            format!("address {p} is voter {other}'s: expected this host's own address"),
                        );
                        }
                        Some(p)
                    }
                    Err(_) => {
                        self.sink.error(
                            a.span(),
                            format!(
                                "address {:?} is not IP:PORT: expected e.g. \"10.10.100.21:7946\"",
                                a.get_ref()
                            ),
                        );
                        None
                    }
                }
            }
        };
        if !hosts.get_ref().is_empty()
            && self.complete("node")
            && !listed
            && c.address.is_none()
            && c.member_nodes.is_none()
        {
            let expected = if is_voters {
                "expected [node] name (default: the hostname) to be one of them, or this host's own address = \"IP:PORT\" (a member that does not vote)"
            } else {
                "expected [node] name (default: the hostname) to be one of them"
            };
            self.sink.error(
                hosts.span(),
                format!(
                    "this host {:?} is not among the cluster {key} ({}): {expected}",
                    node.name,
                    list(hosts.get_ref().keys().map(|k| k.get_ref()))
                ),
            );
        }
        if !listed && node.role == Role::Witness && c.address.is_some() {
            self.sink.error(
                c.address.as_ref().map_or(raw.span(), |a| a.span()),
                "this host is a witness but not a voter: a witness only votes; expected it among voters",
            );
        }
        if hosts.get_ref().len() == 2 {
            self.sink.warning(
                hosts.span(),
                format!(
                    "no failover possible: a cluster of 2 {key} loses its majority when either host fails; expected a third {}: add a witness host (role = \"witness\" in its [node]) to {key}",
                    key.trim_end_matches('s')
                ),
            );
        } else if is_voters && hosts.get_ref().len() > 2 && hosts.get_ref().len() % 2 == 0 {
            // A warning, not an error: an even count is the middle step of replacing a
            // voter (add the new one, then remove the old, one reload each;
            // docs/operate.md, "Replace a voter").
            self.sink.warning(
                hosts.span(),
                format!(
                    "{} voters: an even number tolerates no more failures than one fewer and needs a larger majority; expected an odd number once a voter change is done (add a witness, or drop one)",
                    hosts.get_ref().len()
                ),
            );
        }
        let secret_file = match &c.secret_file {
            Some(f) => self.secret_file("secret_file", f),
            None => {
                self.sink.error(
                    raw.span(),
                    "[cluster] has no secret_file: expected the path of the shared cluster key, e.g. secret_file = \"/etc/lb/cluster.key\"",
                );
                None
            }
        };
        let heartbeat = self.opt_duration(
            "heartbeat",
            c.heartbeat.as_ref(),
            false,
            ClusterConfig::DEFAULT_HEARTBEAT,
        );
        let election_timeout = self.opt_duration(
            "election_timeout",
            c.election_timeout.as_ref(),
            false,
            ClusterConfig::DEFAULT_ELECTION_TIMEOUT,
        );
        let clock_drift = self.opt_duration(
            "clock_drift",
            c.clock_drift.as_ref(),
            false,
            ClusterConfig::DEFAULT_CLOCK_DRIFT,
        );
        let lease = 3 * heartbeat;
        if heartbeat < ClusterConfig::MIN_HEARTBEAT {
            self.sink.error(
                c.heartbeat.as_ref().map_or(raw.span(), |h| h.span()),
                format!(
                    "heartbeat {} is too short: expected at least {}",
                    Dur(heartbeat),
                    Dur(ClusterConfig::MIN_HEARTBEAT)
                ),
            );
        } else if lease + heartbeat + clock_drift >= election_timeout {
            // A follower's lease must run out before the others elect a new leader, even
            // when the last heartbeat was late and clocks drift apart (DESIGN: raft-lite).
            let span = c
                .election_timeout
                .as_ref()
                .or(c.heartbeat.as_ref())
                .or(c.clock_drift.as_ref())
                .map_or(raw.span(), |s| s.span());
            self.sink.error(
                span,
                format!(
                    "election_timeout {} is too short for heartbeat {}: expected more than lease {} + heartbeat {} + clock_drift {} = {} (lease = 3 x heartbeat)",
                    Dur(election_timeout),
                    Dur(heartbeat),
                    Dur(lease),
                    Dur(heartbeat),
                    Dur(clock_drift),
                    Dur(lease + heartbeat + clock_drift)
                ),
            );
        }
        ClusterConfig {
            members,
            address,
            members_may_join: is_voters,
            member_nodes: None,
            secret_file,
            heartbeat,
            election_timeout,
            clock_drift,
            lease,
        }
    }

    /// `[cluster] member_nodes` (issue 14): needs `[kubernetes]` (the Nodes come from it)
    /// and `voters` (the voters stay explicit); a member then has no `address`.
    fn member_nodes(&mut self, raw: &S<RawCluster>, kubernetes: bool) -> Option<MemberNodes> {
        let c = raw.get_ref();
        let m = c.member_nodes.as_ref()?;
        if !kubernetes {
            self.sink.error(
                m.span(),
                "member_nodes takes the members from Kubernetes Nodes, but there is no [kubernetes]: expected a [kubernetes] table with a kubeconfig, or the members' own address = \"IP:PORT\" instead",
            );
        }
        if c.voters.is_none() {
            self.sink.error(
                m.span(),
                "member_nodes needs voters: expected voters = { a = \"10.10.100.3:7946\", ... } (the voters stay explicit; with members every host is listed and votes)",
            );
        }
        if let Some(a) = &c.address {
            self.sink.error(
                a.span(),
                "address and member_nodes exclude each other: with member_nodes a member's address is its Node's InternalIP and the member_nodes port; expected no address",
            );
        }
        let node_selectors = self.selectors(m.get_ref().node_selectors.as_ref());
        let port = match &m.get_ref().port {
            Some(p) => self.int::<u16>("member_nodes port", p, 1, 65535)?,
            None => ClusterConfig::DEFAULT_PORT,
        };
        Some(MemberNodes {
            node_selectors,
            port,
        })
    }

    // ---- [layer2], [bgp_communities] ------------------------------------------------------

    fn layer2(&mut self, raw: RawLayer2) -> Layer2Config {
        let d = Layer2Config::default();
        let gratuitous_count = raw
            .gratuitous_count
            .as_ref()
            .and_then(|c| self.int("gratuitous_count", c, 0, 100))
            .unwrap_or(d.gratuitous_count);
        let gratuitous_interval = self.opt_duration(
            "gratuitous_interval",
            raw.gratuitous_interval.as_ref(),
            false,
            d.gratuitous_interval,
        );
        let refresh_interval = match &raw.refresh_interval {
            None => d.refresh_interval,
            Some(r) => self
                .duration("refresh_interval", r, true)
                .and_then(|r| (!r.is_zero()).then_some(r)),
        };
        Layer2Config {
            gratuitous_count,
            gratuitous_interval,
            refresh_interval,
        }
    }

    fn aliases(&mut self, raw: RawCommunities) -> HashMap<String, AnyCommunity> {
        let mut out = HashMap::new();
        for (name, value) in raw {
            if name.get_ref().contains(':')
                || super::values::well_known_community(name.get_ref()).is_some()
            {
                self.sink.error(
                    name.span(),
                    format!(
                        "alias {:?} looks like a community itself: expected a name without ':' that is not a well-known community",
                        name.get_ref()
                    ),
                );
                continue;
            }
            match parse_community(value.get_ref()) {
                Ok(c) => {
                    out.insert(name.into_inner(), c);
                }
                Err(e) => self.sink.error(value.span(), e.to_string()),
            }
        }
        out
    }

    // ---- [[bgp_peer]] ---------------------------------------------------------------------

    fn asn(&mut self, key: &str, value: &S<i64>) -> Option<u32> {
        let v = *value.get_ref();
        let problem = match v {
            0 => Some(format!(
                "{key} 0 is reserved (RFC 7607): expected an ASN from 1 to 4294967295"
            )),
            23456 => Some(format!(
                "{key} 23456 is AS_TRANS (RFC 6793), not a real ASN: expected your actual ASN"
            )),
            v if !(1..=i64::from(u32::MAX)).contains(&v) => Some(format!(
                "{key} {v} is out of range: expected an ASN from 1 to 4294967295"
            )),
            _ => None,
        };
        match problem {
            Some(p) => {
                self.sink.error(value.span(), p);
                None
            }
            None => u32::try_from(v).ok(),
        }
    }

    /// A BGP timer: whole seconds (the protocol carries seconds), at most 65535 s (two octets,
    /// RFC 4271 §4.2).
    fn bgp_seconds(&mut self, key: &str, value: &S<String>) -> Option<Duration> {
        let d = self.duration(key, value, true)?;
        if d.subsec_millis() != 0 {
            self.sink.error(
                value.span(),
                format!(
                    "{key} {} is not whole seconds: expected e.g. \"3s\" or \"1m30s\"",
                    Dur(d)
                ),
            );
            return None;
        }
        if d > Duration::from_secs(65535) {
            self.sink.error(
                value.span(),
                format!("{key} {} is too long: expected at most 65535s", Dur(d)),
            );
            return None;
        }
        Some(d)
    }

    fn peers(&mut self, raw: &[S<RawPeer>]) -> Vec<BgpPeer> {
        let mut out = Vec::new();
        // (address, port, selectors) of peers seen so far, with the line they were defined on.
        let mut seen: Vec<(IpAddr, u16, Vec<NodeSelector>, usize)> = Vec::new();
        for raw_peer in raw {
            let p = raw_peer.get_ref();
            let my_asn = self.asn("my_asn", &p.my_asn);
            let (peer_asn, dynamic_asn) = self.peer_asn(raw_peer, my_asn);
            let address = self.ip("address", &p.address);
            if let Some(a) = address
                && (a.is_unspecified() || a.is_multicast() || a == IpAddr::V4(Ipv4Addr::BROADCAST))
            {
                self.sink.error(
                    p.address.span(),
                    format!(
                        "address {a} is not a unicast address: expected the peer router's address"
                    ),
                );
            }
            let port = p
                .port
                .as_ref()
                .and_then(|v| self.int("port", v, 1, 65535))
                .unwrap_or(BgpPeer::DEFAULT_PORT);
            let hold_time = match &p.hold_time {
                None => Some(BgpPeer::DEFAULT_HOLD_TIME),
                Some(h) => self.bgp_seconds("hold_time", h).and_then(|d| {
                    // RFC 4271 §4.2: the hold time is zero or at least three seconds.
                    if !d.is_zero() && d < Duration::from_secs(3) {
                        self.sink.error(
                            h.span(),
                            format!(
                                "hold_time {} is too short: expected 0s or at least 3s",
                                Dur(d)
                            ),
                        );
                        None
                    } else {
                        Some(d)
                    }
                }),
            };
            let keepalive_time = match (&p.keepalive_time, hold_time) {
                (None, Some(hold)) => Some(default_keepalive(hold)),
                (None, None) => None,
                (Some(k), hold) => {
                    let k_span = k.span();
                    self.bgp_seconds("keepalive_time", k).and_then(|k| {
                        let hold = hold?;
                        if k > hold {
                            self.sink.error(
                                k_span,
                                format!(
                                    "keepalive_time {} is longer than hold_time {}: expected at most the hold time (a third of it is usual)",
                                    Dur(k),
                                    Dur(hold)
                                ),
                            );
                            None
                        } else if k.is_zero() && !hold.is_zero() {
                            self.sink.error(
                                k_span,
                                format!(
                                    "keepalive_time 0s would let hold_time {} expire: expected a keepalive between 1s and {} (a third of the hold time is usual)",
                                    Dur(hold),
                                    Dur(hold)
                                ),
                            );
                            None
                        } else {
                            Some(k)
                        }
                    })
                }
            };
            let router_id = p.router_id.as_ref().and_then(|r| {
                match r.get_ref().parse::<Ipv4Addr>() {
                    Ok(id) if !id.is_unspecified() => Some(id),
                    _ => {
                        self.sink.error(
                            r.span(),
                            format!(
                                "router_id {:?} is not a BGP identifier: expected a non-zero IPv4 address (4 octets, RFC 6286)",
                                r.get_ref()
                            ),
                        );
                        None
                    }
                }
            });
            let source_address = p.source_address.as_ref().and_then(|s| {
                let ip = self.ip("source_address", s)?;
                if let Some(a) = address
                    && IpFamily::of(&a) != IpFamily::of(&ip)
                {
                    self.sink.error(
                        s.span(),
                        format!(
                            "source_address {ip} is {} but address {a} is {}: expected an {} source address",
                            family_name(IpFamily::of(&ip)),
                            family_name(IpFamily::of(&a)),
                            family_name(IpFamily::of(&a))
                        ),
                    );
                }
                Some(ip)
            });
            let password_file = p
                .password_file
                .as_ref()
                .and_then(|f| self.secret_file("password_file", f));
            let ebgp_multihop = p
                .ebgp_multihop
                .as_ref()
                .and_then(|v| self.int("ebgp_multihop", v, 1, 255))
                .unwrap_or(1);
            if let (Some(m), Some(a), Some(b)) = (&p.ebgp_multihop, my_asn, peer_asn)
                && a == b
                && dynamic_asn != Some(DynamicAsn::External)
                && *m.get_ref() != 1
            {
                self.sink.warning(
                    m.span(),
                    "ebgp_multihop has no effect on an iBGP session (my_asn = peer_asn): expected it only on eBGP peers",
                );
            }
            let connect_delay = self.opt_duration(
                "connect_delay",
                p.connect_delay.as_ref(),
                true,
                Duration::ZERO,
            );
            let connect_time = p.connect_time.as_ref().and_then(|t| {
                let d = self.bgp_seconds("connect_time", t)?;
                if d.is_zero() {
                    self.sink.error(
                        t.span(),
                        "connect_time 0s is too short: expected whole seconds from 1s to 65535s",
                    );
                    return None;
                }
                if p.passive == Some(true) {
                    self.sink.warning(
                        t.span(),
                        "connect_time has no effect on a passive peer (it never connects): expected it only on active peers",
                    );
                }
                Some(d)
            });
            let node_selectors = self.selectors(p.node_selectors.as_ref());
            let bfd = p.bfd.as_ref().map(|b| self.bfd(b.get_ref()));
            let graceful_restart = self.graceful_restart(p);
            let (
                Some(my_asn),
                Some(peer_asn),
                Some(address),
                Some(hold_time),
                Some(keepalive_time),
            ) = (my_asn, peer_asn, address, hold_time, keepalive_time)
            else {
                continue;
            };
            let line = self.sink.line_of(raw_peer.span().start);
            if let Some((_, _, _, first_line)) = seen
                .iter()
                .find(|(a, pt, s, _)| *a == address && *pt == port && *s == node_selectors)
            {
                self.sink.error(
                    p.address.span(),
                    format!(
                        "duplicate [[bgp_peer]] {address} port {port} with the same node_selectors as the one at line {first_line}: expected one entry per peer and node set"
                    ),
                );
            }
            seen.push((address, port, node_selectors.clone(), line));
            out.push(BgpPeer {
                my_asn,
                peer_asn,
                dynamic_asn,
                address,
                port,
                hold_time,
                keepalive_time,
                router_id,
                source_address,
                password_file,
                ebgp_multihop,
                passive: p.passive.unwrap_or(false),
                connect_delay,
                connect_time,
                node_selectors,
                bfd,
                graceful_restart,
            });
        }
        out
    }

    /// `peer_asn`, or `dynamic_asn` (one of them): the AS the peer's OPEN must carry (`my_asn`
    /// for internal, 0 for external) and the dynamic kind.
    fn peer_asn(
        &mut self,
        raw: &S<RawPeer>,
        my_asn: Option<u32>,
    ) -> (Option<u32>, Option<DynamicAsn>) {
        let p = raw.get_ref();
        let dynamic = match &p.dynamic_asn {
            None => None,
            Some(d) => match d.get_ref().as_str() {
                "internal" => Some(Ok(DynamicAsn::Internal)),
                "external" => Some(Ok(DynamicAsn::External)),
                other => {
                    self.sink.error(
                        d.span(),
                        format!("dynamic_asn {other:?} is unknown: expected \"internal\" (the peer's AS is ours) or \"external\" (any other AS)"),
                    );
                    Some(Err(()))
                }
            },
        };
        match (&p.peer_asn, &p.dynamic_asn, dynamic) {
            (Some(_), Some(d), _) => {
                self.sink.error(
                    d.span(),
                    "dynamic_asn and peer_asn are both set: expected one of them (peer_asn for a fixed AS, dynamic_asn when the peer's AS is not fixed)",
                );
                (None, None)
            }
            (Some(a), None, _) => (self.asn("peer_asn", a), None),
            (None, _, Some(Ok(DynamicAsn::Internal))) => (my_asn, Some(DynamicAsn::Internal)),
            (None, _, Some(Ok(DynamicAsn::External))) => (Some(0), Some(DynamicAsn::External)),
            (None, _, Some(Err(()))) => (None, None),
            (None, _, None) => {
                self.sink.error(
                    raw.span(),
                    "missing required key `peer_asn`: expected peer_asn, or dynamic_asn = \"internal\" or \"external\" when the peer's AS is not fixed",
                );
                (None, None)
            }
        }
    }

    /// `graceful_restart` (default on) and `restart_time` (RFC 4724 §3: 12 bits of seconds).
    fn graceful_restart(&mut self, p: &RawPeer) -> Option<Duration> {
        let on = p.graceful_restart.as_ref().is_none_or(|g| *g.get_ref());
        let time = match &p.restart_time {
            None => BgpPeer::DEFAULT_RESTART_TIME,
            Some(t) => {
                let d = self.duration("restart_time", t, false)?;
                if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > 4095 {
                    self.sink.error(
                        t.span(),
                        format!(
                            "restart_time {d:?} is out of range: expected whole seconds from 1s to 4095s (RFC 4724)"
                        ),
                    );
                    return None;
                }
                if !on {
                    self.sink.warning(
                        t.span(),
                        "restart_time has no effect with graceful_restart = false",
                    );
                }
                d
            }
        };
        on.then_some(time)
    }

    fn bfd(&mut self, raw: &RawBfd) -> BfdConfig {
        let d = BfdConfig::default();
        BfdConfig {
            receive_interval: self.opt_duration(
                "receive_interval",
                raw.receive_interval.as_ref(),
                false,
                d.receive_interval,
            ),
            transmit_interval: self.opt_duration(
                "transmit_interval",
                raw.transmit_interval.as_ref(),
                false,
                d.transmit_interval,
            ),
            detect_multiplier: raw
                .detect_multiplier
                .as_ref()
                .and_then(|m| self.int("detect_multiplier", m, 1, 255))
                .unwrap_or(d.detect_multiplier),
        }
    }

    // ---- [[pool]] -------------------------------------------------------------------------

    fn pools(
        &mut self,
        raw: &[S<RawPool>],
        aliases: &HashMap<String, AnyCommunity>,
        peers: &KnownPeers,
    ) -> Vec<Pool> {
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut sites: Vec<RangeSite> = Vec::new();
        for (index, raw_pool) in raw.iter().enumerate() {
            let p = raw_pool.get_ref();
            let name = p.name.get_ref().clone();
            if name.trim().is_empty() {
                self.sink.error(
                    p.name.span(),
                    "pool name is empty: expected a name such as \"ip-space-1\"",
                );
            } else if let Some(line) = names.get(&name) {
                self.sink.error(
                    p.name.span(),
                    format!("duplicate pool name {name:?} (first at line {line}): expected unique pool names"),
                );
            } else {
                names.insert(name.clone(), self.sink.line_of(p.name.span().start));
            }
            let protocol = match p.protocol.get_ref().as_str() {
                "layer2" => Some(PoolProtocol::Layer2),
                "bgp" => Some(PoolProtocol::Bgp),
                "none" => Some(PoolProtocol::None),
                other => {
                    self.sink.error(
                        p.protocol.span(),
                        format!("protocol {other:?} is unknown: expected \"layer2\", \"bgp\" or \"none\" (allocate-only)"),
                    );
                    None
                }
            };
            let mut ranges = Vec::new();
            if p.addresses.get_ref().is_empty() {
                self.sink.error(
                    p.addresses.span(),
                    format!(
                        "pool {name:?} has empty addresses: expected at least one CIDR, IP or range"
                    ),
                );
            }
            for a in p.addresses.get_ref() {
                match parse_ip_range(a.get_ref()) {
                    Ok(r) => {
                        ranges.push(r);
                        sites.push(RangeSite {
                            range: r,
                            pool: index,
                            text: a.get_ref().trim().to_string(),
                            span: a.span(),
                        });
                    }
                    Err(e) => self.sink.error(a.span(), e.to_string()),
                }
            }
            let interfaces: Vec<String> = p
                .interfaces
                .as_ref()
                .map(|list| {
                    for i in list.get_ref() {
                        let n = i.get_ref();
                        if n.is_empty()
                            || n.len() > 15
                            || n.contains(['/', ':'])
                            || n.chars().any(char::is_whitespace)
                            || n == "."
                            || n == ".."
                        {
                            self.sink.error(
                                i.span(),
                                format!("interface {n:?} is not an interface name: expected 1 to 15 characters without '/', ':' or spaces"),
                            );
                        }
                    }
                    list.get_ref().iter().map(|i| i.get_ref().clone()).collect()
                })
                .unwrap_or_default();
            if let Some(proto @ (PoolProtocol::Bgp | PoolProtocol::None)) = protocol
                && let Some(i) = &p.interfaces
            {
                self.sink.error(
                    i.span(),
                    format!("interfaces is for layer2 pools, but pool {name:?} is {proto}: expected no interfaces here"),
                );
            }
            if protocol == Some(PoolProtocol::None)
                && let Some(first) = p.node_selectors.as_ref().and_then(|s| s.first())
            {
                self.sink.error(
                    first.span(),
                    format!("node_selectors choose the hosts that announce a pool, but pool {name:?} is allocate-only (protocol = \"none\"): expected no node_selectors here"),
                );
            }
            let node_selectors = self.selectors(p.node_selectors.as_ref());
            let mut bgp_advertisements = Vec::new();
            if let Some(advs) = &p.bgp_advertisement {
                if let Some(proto @ (PoolProtocol::Layer2 | PoolProtocol::None)) = protocol {
                    self.sink.error(
                        advs.span(),
                        format!("bgp_advertisement is for bgp pools, but pool {name:?} is {proto}: expected protocol = \"bgp\" or no [[pool.bgp_advertisement]]"),
                    );
                }
                for adv in advs.get_ref() {
                    bgp_advertisements.push(self.advertisement(
                        adv.get_ref(),
                        &ranges,
                        aliases,
                        peers,
                    ));
                }
            }
            if protocol == Some(PoolProtocol::Bgp)
                && peers.addresses.is_empty()
                && self.complete("bgp_peer")
            {
                self.sink.warning(
                    p.protocol.span(),
                    format!("pool {name:?} is bgp but no [[bgp_peer]] is configured: expected at least one peer, or its addresses are announced nowhere"),
                );
            }
            let service_allocation = self.service_allocation(p, &name);
            out.push(Pool {
                name,
                protocol: protocol.unwrap_or(PoolProtocol::Layer2),
                ranges,
                auto_assign: p.auto_assign.unwrap_or(true),
                avoid_buggy_ips: p.avoid_buggy_ips.unwrap_or(false),
                interfaces,
                node_selectors,
                bgp_advertisements,
                service_allocation,
            });
        }
        self.overlaps(sites, raw);
        out
    }

    /// `priority`, `namespaces`, `namespace_selectors`, `service_selectors` (MetalLB's
    /// `serviceAllocation`).
    fn service_allocation(&mut self, p: &RawPool, name: &str) -> ServiceAllocation {
        let priority = p
            .priority
            .as_ref()
            .and_then(|v| self.int::<u32>("priority", v, 0, i64::from(i32::MAX)))
            .unwrap_or(0);
        let mut namespaces: Vec<String> = Vec::new();
        for ns in p.namespaces.iter().flat_map(|l| l.get_ref()) {
            let n = ns.get_ref();
            if let Some(why) = invalid_namespace(n) {
                self.sink.error(
                    ns.span(),
                    format!("namespace {n:?} {why}: expected a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"),
                );
            } else if !namespaces.contains(n) {
                namespaces.push(n.clone());
            }
        }
        let namespace_selectors = self.selectors(p.namespace_selectors.as_ref());
        let service_selectors = self.selectors(p.service_selectors.as_ref());
        let alloc = ServiceAllocation {
            priority,
            namespaces,
            namespace_selectors,
            service_selectors,
        };
        if let Some(v) = &p.priority
            && alloc.namespaces.is_empty()
            && alloc.namespace_selectors.is_empty()
            && alloc.service_selectors.is_empty()
        {
            // MetalLB's rule: a pool with a serviceAllocation is pinned only to the Services
            // it names, so a priority alone takes it out of auto-assignment.
            self.sink.warning(
                v.span(),
                format!("pool {name:?} has a priority but no namespaces, namespace_selectors or service_selectors: it is pinned to no Service and no longer auto-assigned; expected one of them, or no priority"),
            );
        }
        alloc
    }

    /// Reports every range that overlaps an earlier one (within a pool or across pools).
    fn overlaps(&mut self, mut sites: Vec<RangeSite>, raw: &[S<RawPool>]) {
        // Sorting by start lets one pass find each overlap against the furthest-reaching
        // range so far: O(n log n) even for large fuzzed inputs.
        sites.sort_by_key(|s| (s.range.family(), s.range.first, s.span.start));
        let mut reach: Option<usize> = None;
        for i in 0..sites.len() {
            if let Some(r) = reach {
                let (a, b) = (&sites[r], &sites[i]);
                if a.range.overlaps(&b.range) {
                    // Blame whichever comes later in the file.
                    let (earlier, later) = if a.span.start <= b.span.start {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    let line = self.sink.line_of(earlier.span.start);
                    let msg = if earlier.pool == later.pool {
                        format!(
                            "{} overlaps {} (line {line}) in the same pool: expected each address listed once",
                            later.text, earlier.text
                        )
                    } else {
                        format!(
                            "{} overlaps {} of pool {:?} (line {line}): expected pools with disjoint addresses",
                            later.text,
                            earlier.text,
                            raw[earlier.pool].get_ref().name.get_ref()
                        )
                    };
                    self.sink.error(later.span.clone(), msg);
                }
            }
            let extends = match reach {
                None => true,
                Some(r) => {
                    sites[r].range.family() != sites[i].range.family()
                        || sites[i].range.last > sites[r].range.last
                }
            };
            if extends {
                reach = Some(i);
            }
        }
    }

    fn aggregation(
        &mut self,
        key: &str,
        value: Option<&S<i64>>,
        family: IpFamily,
        ranges: &[IpRange],
    ) -> u8 {
        let max = max_prefix(family);
        let Some(value) = value else {
            return max;
        };
        let Some(len) = self.int::<u8>(key, value, 0, i64::from(max)) else {
            return max;
        };
        // MetalLB's rule: an aggregate shorter than a pool prefix would announce addresses
        // outside the pool.
        if let Some((r, needed)) = ranges
            .iter()
            .filter(|r| r.family() == family)
            .map(|r| (r, covering_prefix_len(r)))
            .find(|(_, needed)| *needed > len)
        {
            self.sink.error(
                value.span(),
                format!(
                    "{key} {len} is shorter than the prefix /{needed} covering {r} in this pool: expected at least {needed}"
                ),
            );
        }
        len
    }

    fn advertisement(
        &mut self,
        raw: &RawAdvertisement,
        ranges: &[IpRange],
        aliases: &HashMap<String, AnyCommunity>,
        peers: &KnownPeers,
    ) -> BgpAdvertisement {
        let aggregation_length_v4 = self.aggregation(
            "aggregation_length",
            raw.aggregation_length.as_ref(),
            IpFamily::V4,
            ranges,
        );
        let aggregation_length_v6 = self.aggregation(
            "aggregation_length_v6",
            raw.aggregation_length_v6.as_ref(),
            IpFamily::V6,
            ranges,
        );
        let local_pref = raw
            .local_pref
            .as_ref()
            .and_then(|l| self.int::<u32>("local_pref", l, 0, i64::from(u32::MAX)));
        if let Some(l) = &raw.local_pref
            && self.complete("bgp_peer")
            && !peers.valid.is_empty()
            && peers.valid.iter().all(|p| !p.is_ibgp())
        {
            self.sink.warning(
                l.span(),
                "local_pref is sent to iBGP peers only, and every [[bgp_peer]] is eBGP: expected an iBGP peer (my_asn = peer_asn) or no local_pref",
            );
        }
        let mut communities = Vec::new();
        let mut large_communities = Vec::new();
        for c in raw.communities.iter().flatten() {
            let parsed = match aliases.get(c.get_ref()) {
                Some(a) => Ok(*a),
                None => parse_community(c.get_ref()),
            };
            match parsed {
                Ok(AnyCommunity::Standard(s)) if !communities.contains(&s) => communities.push(s),
                Ok(AnyCommunity::Large(l)) if !large_communities.contains(&l) => {
                    large_communities.push(l)
                }
                Ok(_) => {}
                Err(_) if !self.complete("bgp_communities") => {}
                Err(e) => self.sink.error(c.span(), e.to_string()),
            }
        }
        let node_selectors = self.selectors(raw.node_selectors.as_ref());
        let mut adv_peers = Vec::new();
        for p in raw.peers.iter().flatten() {
            let Some(ip) = self.ip("peers", p) else {
                continue;
            };
            if !peers.addresses.contains(&ip) && self.complete("bgp_peer") {
                self.sink.error(
                    p.span(),
                    format!(
                        "peers: {ip} is not the address of any [[bgp_peer]]: expected one of {}",
                        list(&peers.addresses)
                    ),
                );
            }
            adv_peers.push(ip);
        }
        BgpAdvertisement {
            aggregation_length_v4,
            aggregation_length_v6,
            local_pref,
            communities,
            large_communities,
            node_selectors,
            peers: adv_peers,
        }
    }

    // ---- [[service]] ----------------------------------------------------------------------

    fn services(&mut self, raw: &[S<RawService>], pools: &[Pool]) -> Vec<StaticService> {
        let pools_complete = self.complete("pool");
        let mut out: Vec<StaticService> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // IP → (service name, its ports, line) for the sharing check.
        let mut by_ip: HashMap<IpAddr, Vec<(String, Vec<ServicePort>, usize)>> = HashMap::new();
        for raw_service in raw {
            let s = raw_service.get_ref();
            let name = s.name.get_ref().clone();
            if name.trim().is_empty() {
                self.sink.error(
                    s.name.span(),
                    "service name is empty: expected a name such as \"kube-apiserver\"",
                );
            } else if let Some(line) = names.get(&name) {
                self.sink.error(
                    s.name.span(),
                    format!("duplicate service name {name:?} (first at line {line}): expected unique service names"),
                );
            } else {
                names.insert(name.clone(), self.sink.line_of(s.name.span().start));
            }
            let ip = s.ip.as_ref().and_then(|i| {
                let ip = self.ip("ip", i)?;
                if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                    self.sink.error(
                        i.span(),
                        format!("ip {ip} cannot be a service address: expected a unicast address from a pool"),
                    );
                    return None;
                }
                Some((ip, i.span()))
            });
            let pool_names = || list(pools.iter().map(|p| format!("{:?}", p.name)));
            let pool = match (&s.pool, ip.clone()) {
                (None, None) => {
                    self.sink.error(
                        raw_service.span(),
                        format!(
                            "service {name:?} has neither pool nor ip: expected pool, ip, or both"
                        ),
                    );
                    None
                }
                (Some(p), ip) => match pools.iter().find(|pool| &pool.name == p.get_ref()) {
                    None if !pools_complete => None,
                    None => {
                        self.sink.error(
                            p.span(),
                            format!(
                                "pool {:?} is not defined: expected one of {}",
                                p.get_ref(),
                                pool_names()
                            ),
                        );
                        None
                    }
                    Some(pool) => {
                        if let Some((ip, span)) = ip {
                            let family = IpFamily::of(&ip);
                            if !pool.ranges.iter().any(|r| r.family() == family) {
                                self.sink.error(
                                    span,
                                    format!(
                                        "ip {ip} is {} but pool {:?} has no {} addresses: expected an address of the pool ({})",
                                        family_name(family),
                                        pool.name,
                                        family_name(family),
                                        list(&pool.ranges)
                                    ),
                                );
                            } else if !pool.contains(&ip) {
                                self.sink.error(
                                    span,
                                    format!(
                                        "ip {ip} is outside pool {:?}: expected an address of the pool ({})",
                                        pool.name,
                                        list(&pool.ranges)
                                    ),
                                );
                            }
                        }
                        Some(pool.name.clone())
                    }
                },
                (None, Some((ip, span))) => match pools.iter().find(|p| p.contains(&ip)) {
                    Some(pool) => Some(pool.name.clone()),
                    None if !pools_complete => None,
                    None => {
                        self.sink.error(
                            span,
                            format!("ip {ip} is in no pool: expected an address of one of the pools ({})", pool_names()),
                        );
                        None
                    }
                },
            };
            let mut ports: Vec<ServicePort> = Vec::new();
            for p in s.ports.iter().flatten() {
                match parse_service_port(p.get_ref()) {
                    Ok(port) if ports.contains(&port) => self.sink.error(
                        p.span(),
                        format!(
                            "port {:?} is listed twice: expected each port once",
                            p.get_ref()
                        ),
                    ),
                    Ok(port) => ports.push(port),
                    Err(e) => self.sink.error(p.span(), e.to_string()),
                }
            }
            if let Some((ip, span)) = &ip {
                let sharers = by_ip.entry(*ip).or_default();
                for (other, other_ports, line) in sharers.iter() {
                    if ports.is_empty() || other_ports.is_empty() {
                        self.sink.error(
                            span.clone(),
                            format!("ip {ip} is also used by service {other:?} (line {line}): expected both services to list their ports so they can share the IP"),
                        );
                    } else if let Some(clash) = ports.iter().find(|p| other_ports.contains(p)) {
                        self.sink.error(
                            span.clone(),
                            format!(
                                "ip {ip} port {}/{} is also used by service {other:?} (line {line}): expected services sharing an IP to use distinct ports",
                                clash.port,
                                clash.protocol.to_string().to_ascii_lowercase()
                            ),
                        );
                    }
                }
                sharers.push((
                    name.clone(),
                    ports.clone(),
                    self.sink.line_of(s.name.span().start),
                ));
            }
            if let Some(pool) = pool {
                out.push(StaticService {
                    name,
                    pool,
                    ip: ip.map(|(ip, _)| ip),
                    assign: s.assign.unwrap_or(false),
                    ports,
                });
            }
        }
        out
    }

    // ---- [metrics], [log] -----------------------------------------------------------------

    fn metrics(&mut self, raw: RawMetrics) -> MetricsConfig {
        let Some(listen) = raw.listen else {
            return MetricsConfig::default();
        };
        match listen.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => MetricsConfig { listen: a },
            _ => {
                self.sink.error(
                    listen.span(),
                    format!(
                        "metrics listen {:?} is not an address to listen on: expected IP:PORT with a non-zero port, e.g. \"127.0.0.1:7472\" or \"[::1]:7472\"",
                        listen.get_ref()
                    ),
                );
                MetricsConfig::default()
            }
        }
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let level = match raw.level.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
            None => LogLevel::Info,
            Some(("error", _)) => LogLevel::Error,
            Some(("warn", _)) => LogLevel::Warn,
            Some(("info", _)) => LogLevel::Info,
            Some(("debug", _)) => LogLevel::Debug,
            Some(("trace", _)) => LogLevel::Trace,
            Some((other, span)) => {
                self.sink.error(
                    span,
                    format!(
                        "log level {other:?} is unknown: expected error, warn, info, debug or trace"
                    ),
                );
                LogLevel::Info
            }
        };
        let format = match raw
            .format
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span()))
        {
            None | Some(("auto", _)) => LogFormat::Auto,
            Some(("text", _)) => LogFormat::Text,
            Some(("journald", _)) => LogFormat::Journald,
            Some((other, span)) => {
                self.sink.error(
                    span,
                    format!("log format {other:?} is unknown: expected auto, text or journald"),
                );
                LogFormat::Auto
            }
        };
        LogConfig { level, format }
    }
}

/// Default keepalive: a third of the hold time in whole seconds, at least 1 s (RFC 4271
/// §10 suggests one third).
fn default_keepalive(hold: Duration) -> Duration {
    if hold.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_secs((hold.as_secs() / 3).max(1))
    }
}

/// Why `name` is not a Kubernetes node name (an RFC 1123 DNS subdomain), if it is not.
/// A Namespace name is a DNS label (RFC 1123).
fn invalid_namespace(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 63 {
        Some("is longer than 63 characters")
    } else if name.contains('.') {
        Some("contains '.'")
    } else {
        invalid_node_name(name)
    }
}

/// Kubernetes' label name (the part after an optional `prefix/`) and label value syntax:
/// at most 63 characters of `[A-Za-z0-9_.-]`, starting and ending alphanumeric.
fn label_word_ok(w: &str) -> bool {
    w.len() <= 63
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && w.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && w.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn invalid_label_key(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty() {
        return Some("has an empty name");
    }
    if !label_word_ok(name) {
        return Some("is not a label name");
    }
    match prefix {
        Some(p) if invalid_node_name(p).is_some() => Some("has a prefix that is not a DNS name"),
        _ => None,
    }
}

fn invalid_node_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > 253 {
        return Some("is longer than 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        None
    } else {
        Some("is not a valid DNS name")
    }
}
