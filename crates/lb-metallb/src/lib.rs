//! Importer of MetalLB ConfigMaps and CRDs into lb.toml (`lbctl import-metallb FILE`; the
//! command itself is `lb::control::offline::import_metallb_main`).

#![forbid(unsafe_code)]
//!
//! Accepted input (one YAML stream, documents separated by `---`; `kind: List` is unwrapped):
//! - the MetalLB ConfigMap (v0.9–v0.12: `data.config` holds `peers`, `bgp-communities`,
//!   `address-pools`, `bfd-profiles`), or the bare content of `data.config`;
//! - the metallb.io/v1beta1 and v1beta2 resources: IPAddressPool, L2Advertisement,
//!   BGPAdvertisement, BGPPeer, Community, BFDProfile.
//!
//! The result is lb.toml text (the schema of `/etc/lb.toml`: `[bgp_communities]`, `[[pool]]`,
//! `[[pool.bgp_advertisement]]`, `[[bgp_peer]]`) plus notes: everything that has no lb
//! equivalent or was changed. Nothing is dropped without a note. Whatever MetalLB itself
//! rejects (a missing ASN, an unparsable address, an unknown community alias) is an
//! [`ImportError`] naming the document and key path. The output is then run through lb's
//! own validator (`lbd --check-config`'s, without file checks): anything it rejects, and any
//! reference to a resource missing from the input, is [`ImportError::Unfinished`], listing
//! every such problem at the input it came from. So an import either succeeds with an
//! lb.toml that passes check-config (once the files the notes name exist) or says what is
//! left to do. The importer is a pure function of its input: same input, same bytes out.
//!
//! A CRD pool that no advertisement covers becomes an allocate-only pool
//! (`protocol = "none"`), as MetalLB treats it: allocated from, never announced.
//! `dynamicASN` and `connectTime` map to `dynamic_asn` and `connect_time`.
//!
//! Choices where MetalLB and lb differ (each one also produces a note):
//! - Passwords are never copied: a peer with `password` or `passwordSecret` gets
//!   `password_file = "/etc/lb/bgp-peer-<address>.key"` and the note says what to write there.
//! - A pool announced by both an L2Advertisement and a BGPAdvertisement becomes a `bgp` pool.
//! - `ebgpMultiHop: true` becomes `ebgp_multihop = 255` (the TTL FRR uses for the bare flag).
//! - `bfdProfile` becomes a `bfd` table from the profile in the input, or MetalLB's defaults
//!   (300 ms, 300 ms, ×3) when the profile is not in the input.
//! - `ipAddressPoolSelectors` are resolved once, against the pool labels in the input.
//! - Several L2Advertisements on one pool are merged (union of nodes and interfaces).
//! - Community aliases stay aliases in `[bgp_communities]`; `large:a:b:c` is written `a:b:c`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use lb_core::model::{LabelExpression, LabelOperator, NodeSelector};

/// The converted configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// lb.toml text, starting with a comment header that repeats the notes.
    pub toml: String,
    /// What has no lb equivalent or was changed, one sentence each, naming where.
    pub notes: Vec<String>,
}

/// Why an input could not be imported. `at` names the document (1-based, with its kind and
/// name when known) and the key path inside it, e.g.
/// `document 2 (BGPPeer metallb-system/peer1): spec.peerASN`.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A syntax error; serde_yaml's message carries the line and column in the input.
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{at}: not valid YAML: {source}")]
    EmbeddedYaml {
        at: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "no MetalLB configuration found ({found}); expected a MetalLB ConfigMap, the content of its data.config, or metallb.io resources"
    )]
    NotMetalLb { found: String },
    #[error("{at}: expected {expected}, found {found}")]
    Type {
        at: String,
        expected: &'static str,
        found: String,
    },
    #[error("{at}: required key is missing")]
    Missing { at: String },
    #[error("{at}: invalid AS number {value:?}: {reason}")]
    Asn {
        at: String,
        value: String,
        reason: &'static str,
    },
    #[error("{at}: invalid IP address {value:?}")]
    Address { at: String, value: String },
    #[error("{at}: invalid address range {value:?}: {reason}")]
    Range {
        at: String,
        value: String,
        reason: &'static str,
    },
    #[error("{at}: invalid duration {value:?}: {reason}")]
    Duration {
        at: String,
        value: String,
        reason: &'static str,
    },
    #[error("{at}: invalid BGP community {value:?}: {reason}")]
    Community {
        at: String,
        value: String,
        reason: &'static str,
    },
    #[error("{at}: {value:?} is not valid here: {reason}")]
    Invalid {
        at: String,
        value: String,
        reason: String,
    },
    #[error("{at}: {what} {name:?} is defined twice (first at {first})")]
    Duplicate {
        at: String,
        what: &'static str,
        name: String,
        first: String,
    },
    /// The output would not be a complete, valid lb.toml: each problem names the input
    /// (a reference to a resource missing from it, or what lb's validator rejects).
    #[error(
        "the input does not convert to a valid lb.toml; left to do:{}",
        bullets(problems)
    )]
    Unfinished { problems: Vec<String> },
    #[error("cannot write TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

type Result<T> = std::result::Result<T, ImportError>;

fn bullets(items: &[String]) -> String {
    items.iter().map(|i| format!("\n  - {i}")).collect()
}

/// Converts a MetalLB configuration (see the module docs for the accepted shapes) to lb.toml.
pub fn import(yaml: &str) -> Result<Imported> {
    let mut st = State::default();
    let mut index = 0usize;
    for de in serde_yaml::Deserializer::from_str(yaml) {
        index += 1;
        // The iterator repeats a load failure forever, so stop at the first error.
        let value = Value::deserialize(de).map_err(|source| ImportError::Yaml {
            document: index,
            source,
        })?;
        st.document(&value, &format!("document {index}"))?;
    }
    if !st.found_metallb {
        let found = if index == 0 {
            "the input is empty".to_string()
        } else {
            st.unrecognized
                .first()
                .cloned()
                .unwrap_or_else(|| "only empty documents".to_string())
        };
        return Err(ImportError::NotMetalLb { found });
    }
    for u in std::mem::take(&mut st.unrecognized) {
        st.notes
            .push(format!("{u}: not MetalLB configuration, ignored"));
    }
    st.finish()
}

// ---------------------------------------------------------------------------------------------
// Output: the lb.toml schema, serialized with `toml::to_string`.

#[derive(Default)]
struct Out {
    /// alias → (value, where defined)
    bgp_communities: BTreeMap<String, (String, String)>,
    pools: Vec<PoolOut>,
    peers: Vec<PeerOut>,
}

/// Where an lb.toml table came from in the MetalLB input: the resource (or ConfigMap entry)
/// and, per lb key, the input key it was read from. Validation errors in the output are
/// reported at these places.
#[derive(Clone, Debug, Default, PartialEq)]
struct Origin {
    at: String,
    keys: BTreeMap<&'static str, String>,
}

impl Origin {
    fn new(at: impl Into<String>) -> Self {
        Origin {
            at: at.into(),
            keys: BTreeMap::new(),
        }
    }

    fn key(&mut self, lb_key: &'static str, input_path: String) {
        self.keys.insert(lb_key, input_path);
    }
}

/// Writes lb.toml by hand so node selectors and `bfd` come out as inline tables (as in the
/// schema), while every value goes through `toml::ser::ValueSerializer` (escaped by toml).
/// Each line written remembers its [`Origin`] in the input.
#[derive(Default)]
struct TomlWriter {
    out: String,
    /// Input location of each output line (index = line - 1).
    lines: Vec<String>,
    table: Origin,
}

impl TomlWriter {
    fn line(&mut self, text: &str, origin: &str) {
        self.out.push_str(text);
        self.out.push('\n');
        // A value toml writes as a multi-line string spans several lines.
        for _ in 0..=text.matches('\n').count() {
            self.lines.push(origin.to_string());
        }
    }

    fn header(&mut self, h: &str, origin: &Origin) {
        self.table = origin.clone();
        if !self.out.is_empty() {
            self.line("", &origin.at);
        }
        self.line(h, &origin.at);
    }

    fn kv<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> Result<()> {
        let origin = self.table.keys.get(key).unwrap_or(&self.table.at).clone();
        self.kv_at(key, v, &origin)
    }

    fn kv_at<T: Serialize + ?Sized>(&mut self, key: &str, v: &T, origin: &str) -> Result<()> {
        let mut s = String::new();
        v.serialize(toml::ser::ValueSerializer::new(&mut s))?;
        self.line(&format!("{} = {s}", toml_key(key)), origin);
        Ok(())
    }

    fn opt<T: Serialize>(&mut self, key: &str, v: &Option<T>) -> Result<()> {
        match v {
            Some(v) => self.kv(key, v),
            None => Ok(()),
        }
    }

    fn list<T: Serialize>(&mut self, key: &str, v: &[T]) -> Result<()> {
        if v.is_empty() {
            Ok(())
        } else {
            self.kv(key, v)
        }
    }
}

/// A key bare when TOML allows it, else a basic string with every special character escaped
/// (a quoted key must stay on one line, TOML 1.0 "Keys").
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return k.to_string();
    }
    let mut s = String::from('"');
    for c in k.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04X}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The lb.toml body and, per line, where in the input it came from.
fn render(out: &Out) -> Result<(String, Vec<String>)> {
    let mut w = TomlWriter::default();
    if !out.bgp_communities.is_empty() {
        w.header("[bgp_communities]", &Origin::new("the Community resources"));
        for (k, (v, at)) in &out.bgp_communities {
            w.kv_at(k, v, at)?;
        }
    }
    for p in &out.pools {
        w.header("[[pool]]", &p.origin);
        w.kv("name", &p.name)?;
        w.kv("protocol", p.protocol)?;
        w.kv("addresses", &p.addresses)?;
        w.opt("auto_assign", &p.auto_assign)?;
        w.opt("avoid_buggy_ips", &p.avoid_buggy_ips)?;
        w.list("interfaces", &p.interfaces)?;
        w.list("node_selectors", &p.node_selectors)?;
        let sa = &p.service_allocation;
        w.opt("priority", &sa.priority)?;
        w.list("namespaces", &sa.namespaces)?;
        w.list("namespace_selectors", &sa.namespace_selectors)?;
        w.list("service_selectors", &sa.service_selectors)?;
        for a in &p.bgp_advertisements {
            w.header("[[pool.bgp_advertisement]]", &a.origin);
            w.opt("aggregation_length", &a.aggregation_length)?;
            w.opt("aggregation_length_v6", &a.aggregation_length_v6)?;
            w.opt("local_pref", &a.local_pref)?;
            w.list("communities", &a.communities)?;
            w.list("node_selectors", &a.node_selectors)?;
            w.list("peers", &a.peers)?;
        }
    }
    for p in &out.peers {
        w.header("[[bgp_peer]]", &p.origin);
        w.kv("my_asn", &p.my_asn)?;
        w.opt("peer_asn", &p.peer_asn)?;
        w.opt("dynamic_asn", &p.dynamic_asn)?;
        w.kv("address", &p.address)?;
        w.opt("port", &p.port)?;
        w.opt("hold_time", &p.hold_time)?;
        w.opt("keepalive_time", &p.keepalive_time)?;
        w.opt("router_id", &p.router_id)?;
        w.opt("source_address", &p.source_address)?;
        w.opt("password_file", &p.password_file)?;
        w.opt("ebgp_multihop", &p.ebgp_multihop)?;
        w.opt("connect_time", &p.connect_time)?;
        w.opt("graceful_restart", &p.graceful_restart)?;
        w.list("node_selectors", &p.node_selectors)?;
        w.opt("bfd", &p.bfd)?;
    }
    Ok((w.out, w.lines))
}

#[derive(Clone, Debug)]
struct PoolOut {
    origin: Origin,
    name: String,
    protocol: &'static str,
    addresses: Vec<String>,
    auto_assign: Option<bool>,
    avoid_buggy_ips: Option<bool>,
    interfaces: Vec<String>,
    node_selectors: Vec<SelectorOut>,
    bgp_advertisements: Vec<AdvOut>,
    /// `serviceAllocation`: which Services the pool is for.
    service_allocation: ServiceAllocationOut,
}

#[derive(Clone, Debug, Default)]
struct ServiceAllocationOut {
    priority: Option<u64>,
    namespaces: Vec<String>,
    namespace_selectors: Vec<SelectorOut>,
    service_selectors: Vec<SelectorOut>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct AdvOut {
    origin: Origin,
    aggregation_length: Option<u8>,
    aggregation_length_v6: Option<u8>,
    local_pref: Option<u32>,
    communities: Vec<String>,
    /// (path, text) as written; resolved into `communities` once every alias is known
    /// (Community resources may come after the advertisements using them).
    raw_communities: Vec<(String, String)>,
    node_selectors: Vec<SelectorOut>,
    peers: Vec<String>,
}

#[derive(Clone, Debug)]
struct PeerOut {
    origin: Origin,
    my_asn: u32,
    /// `None` with `dynamic_asn`.
    peer_asn: Option<u32>,
    dynamic_asn: Option<&'static str>,
    address: String,
    port: Option<u16>,
    hold_time: Option<String>,
    keepalive_time: Option<String>,
    router_id: Option<String>,
    source_address: Option<String>,
    password_file: Option<String>,
    ebgp_multihop: Option<u8>,
    connect_time: Option<String>,
    graceful_restart: Option<bool>,
    node_selectors: Vec<SelectorOut>,
    bfd: Option<BfdOut>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
struct BfdOut {
    receive_interval: String,
    transmit_interval: String,
    detect_multiplier: u32,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
struct SelectorOut {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    match_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    match_expressions: Vec<ExprOut>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
struct ExprOut {
    key: String,
    operator: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
}

fn selector_out(s: &NodeSelector) -> SelectorOut {
    SelectorOut {
        match_labels: s.match_labels.clone(),
        match_expressions: s
            .match_expressions
            .iter()
            .map(|e| ExprOut {
                key: e.key.clone(),
                operator: match e.operator {
                    LabelOperator::In => "In",
                    LabelOperator::NotIn => "NotIn",
                    LabelOperator::Exists => "Exists",
                    LabelOperator::DoesNotExist => "DoesNotExist",
                },
                values: e.values.clone(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading YAML with key paths: every read marks the key as known; `finish` notes the rest.

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", truncate(s)),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => describe(other),
    }
}

struct Obj<'a> {
    map: Option<&'a Mapping>,
    at: String,
    seen: BTreeSet<&'static str>,
}

impl<'a> Obj<'a> {
    /// A mapping at `at`; null counts as an empty mapping (as `spec:` with nothing under it).
    fn new(v: &'a Value, at: impl Into<String>) -> Result<Self> {
        let at = at.into();
        match v {
            Value::Mapping(m) => Ok(Obj {
                map: Some(m),
                at,
                seen: BTreeSet::new(),
            }),
            Value::Null => Ok(Obj {
                map: None,
                at,
                seen: BTreeSet::new(),
            }),
            other => Err(ImportError::Type {
                at,
                expected: "a mapping",
                found: describe(other),
            }),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    /// The value under `key`; null is treated as absent.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.insert(key);
        match self.map?.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.map.is_some_and(|m| m.contains_key(key))
    }

    fn str(&mut self, key: &'static str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| scalar_string(v, &self.path(key)))
            .transpose()
    }

    fn req_str(&mut self, key: &'static str) -> Result<String> {
        self.str(key)?
            .ok_or_else(|| ImportError::Missing { at: self.path(key) })
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        let at = self.path(key);
        self.get(key).map(|v| yaml_bool(v, &at)).transpose()
    }

    fn uint(&mut self, key: &'static str, max: u64) -> Result<Option<u64>> {
        let at = self.path(key);
        self.get(key).map(|v| yaml_uint(v, &at, max)).transpose()
    }

    fn list(&mut self, key: &'static str) -> Result<Vec<(String, &'a Value)>> {
        let at = self.path(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{at}[{i}]"), v))
                .collect()),
            Some(other) => Err(ImportError::Type {
                at,
                expected: "a list",
                found: describe(other),
            }),
        }
    }

    fn str_list(&mut self, key: &'static str) -> Result<Vec<(String, String)>> {
        self.list(key)?
            .into_iter()
            .map(|(at, v)| scalar_string(v, &at).map(|s| (at, s)))
            .collect()
    }

    fn obj(&mut self, key: &'static str) -> Result<Option<Obj<'a>>> {
        let at = self.path(key);
        self.get(key).map(|v| Obj::new(v, at)).transpose()
    }

    fn string_map(&mut self, key: &'static str) -> Result<Vec<(String, String, String)>> {
        let Some(o) = self.obj(key)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if let Some(m) = o.map {
            for (k, v) in m {
                let name = scalar_string(k, &o.at)?;
                let at = o.path(&name);
                out.push((at.clone(), name, scalar_string(v, &at)?));
            }
        }
        Ok(out)
    }

    /// Notes every key that was not read, saying it has no lb equivalent.
    fn finish(self, notes: &mut Vec<String>) {
        let Some(m) = self.map else { return };
        for k in m.keys() {
            let known = matches!(k, Value::String(s) if self.seen.contains(s.as_str()));
            if !known {
                notes.push(format!(
                    "{}: unknown key, no lb equivalent; ignored",
                    self.path(&key_name(k))
                ));
            }
        }
    }
}

/// A scalar as text: strings as they are, numbers and booleans as written.
fn scalar_string(v: &Value, at: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ImportError::Type {
            at: at.to_string(),
            expected: "a string",
            found: describe(other),
        }),
    }
}

/// MetalLB's ConfigMap was read with a YAML 1.1 parser, where `yes`/`no`/`on`/`off` are
/// booleans; serde_yaml follows YAML 1.2, so accept those spellings here.
fn yaml_bool(v: &Value, at: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(true),
            "false" | "no" | "n" | "off" => Ok(false),
            _ => Err(ImportError::Type {
                at: at.to_string(),
                expected: "true or false",
                found: describe(v),
            }),
        },
        other => Err(ImportError::Type {
            at: at.to_string(),
            expected: "true or false",
            found: describe(other),
        }),
    }
}

fn yaml_uint(v: &Value, at: &str, max: u64) -> Result<u64> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= max => Ok(n),
        _ => Err(ImportError::Invalid {
            at: at.to_string(),
            value: match v {
                Value::String(s) => truncate(s),
                other => describe(other),
            },
            reason: format!("expected a whole number from 0 to {max}"),
        }),
    }
}

fn asn(v: Option<&Value>, at: String) -> Result<u32> {
    let Some(v) = v else {
        return Err(ImportError::Missing { at });
    };
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => describe(other),
    };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        None => Err(ImportError::Asn {
            at,
            value: text,
            reason: "expected a whole number",
        }),
        Some(0) => Err(ImportError::Asn {
            at,
            value: text,
            reason: "AS 0 is reserved (RFC 7607)",
        }),
        Some(n) => u32::try_from(n).map_err(|_| ImportError::Asn {
            at,
            value: text,
            reason: "larger than 4294967295 (4-octet ASN, RFC 6793)",
        }),
    }
}

fn ip(s: &str, at: &str) -> Result<IpAddr> {
    IpAddr::from_str(s.trim()).map_err(|_| ImportError::Address {
        at: at.to_string(),
        value: truncate(s),
    })
}

// ---------------------------------------------------------------------------------------------
// Value conversions.

/// `10.0.0.0/24` or `a-b` (MetalLB's two forms). Returns the lb spelling and, when the text
/// changed meaningfully (host bits cleared), a note.
fn address(s: &str, at: &str) -> Result<(String, Option<String>)> {
    let t = s.trim();
    if let Some((a, b)) = t.split_once('-') {
        let range_err = |reason| ImportError::Range {
            at: at.to_string(),
            value: truncate(s),
            reason,
        };
        let first = IpAddr::from_str(a.trim()).map_err(|_| range_err("first address invalid"))?;
        let last = IpAddr::from_str(b.trim()).map_err(|_| range_err("last address invalid"))?;
        if first.is_ipv4() != last.is_ipv4() {
            return Err(range_err("ends of different IP families"));
        }
        if first > last {
            return Err(range_err("first address is after the last"));
        }
        return Ok((format!("{first}-{last}"), None));
    }
    let net = IpNet::from_str(t).map_err(|_| ImportError::Range {
        at: at.to_string(),
        value: truncate(s),
        reason: "expected a CIDR prefix (10.0.0.0/24) or a range (10.0.0.1-10.0.0.9)",
    })?;
    let trunc = net.trunc();
    let note = (trunc != net).then(|| {
        format!("{at}: {net} has host bits set; MetalLB uses the network {trunc}, written as such")
    });
    Ok((trunc.to_string(), note))
}

/// Go `time.ParseDuration` syntax (`90s`, `1m30s`, `1.5m`, `500ms`) to lb syntax. A string
/// already in lb syntax is kept as written; another spelling is rewritten and noted.
fn duration(s: &str, at: &str, notes: &mut Vec<String>) -> Result<String> {
    let err = |reason| ImportError::Duration {
        at: at.to_string(),
        value: truncate(s),
        reason,
    };
    let t = s.trim();
    if t == "0" {
        return Ok("0s".into());
    }
    if t.is_empty() {
        return Err(err("empty"));
    }
    if t.starts_with('-') {
        return Err(err("negative"));
    }
    let body = t.strip_prefix('+').unwrap_or(t);
    // Total in nanoseconds, as exact rationals: whole part plus fraction digits.
    let mut total: u128 = 0;
    let mut lb_syntax = !t.starts_with('+');
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("a number without a unit (use ms, s, m or h)")),
            _ => return Err(err("unknown unit (use ms, s, m or h)")),
        };
        if !matches!(unit, "ms" | "s" | "m" | "h") || num.contains('.') {
            lb_syntax = false;
        }
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(err("malformed number"));
        }
        // Bound the digits so the arithmetic below cannot overflow.
        if whole.len() > 15 || frac.len() > 15 {
            return Err(err("too large or too precise"));
        }
        let w: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("malformed number"))?
        };
        let mut part = w * scale;
        if !frac.is_empty() {
            let f: u128 = frac.parse().map_err(|_| err("malformed number"))?;
            let denom = 10u128.pow(frac.len() as u32);
            if !(f * scale).is_multiple_of(denom) {
                return Err(err("finer than a nanosecond"));
            }
            part += f * scale / denom;
        }
        total += part;
        if total > 1_000_000_000 * 86_400 * 365 * 100 {
            return Err(err("too large"));
        }
    }
    if !total.is_multiple_of(1_000_000) {
        return Err(err("finer than a millisecond, which lb cannot express"));
    }
    if lb_syntax {
        return Ok(t.to_string());
    }
    let mut ms = total / 1_000_000;
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    notes.push(format!("{at}: duration {t:?} written as {out:?}"));
    Ok(out)
}

fn milliseconds(ms: u64) -> String {
    format!("{ms}ms")
}

const WELL_KNOWN: [(&str, &str); 6] = [
    // RFC 1997 and RFC 7999 / RFC 8326 well-known communities, written numerically so the
    // output does not depend on which names lb's parser knows.
    ("no-export", "65535:65281"),
    ("no-advertise", "65535:65282"),
    ("no-export-subconfed", "65535:65283"),
    ("no-peer", "65535:65284"),
    ("blackhole", "65535:666"),
    ("graceful-shutdown", "65535:0"),
];

/// A community value: `a:b` (RFC 1997, 16-bit halves), `large:a:b:c` (MetalLB's spelling of
/// RFC 8092 large communities; lb writes `a:b:c`), or a well-known name.
fn community_value(s: &str, at: &str) -> Result<String> {
    let err = |reason| ImportError::Community {
        at: at.to_string(),
        value: truncate(s),
        reason,
    };
    let t = s.trim();
    if let Some((_, v)) = WELL_KNOWN.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
        return Ok((*v).to_string());
    }
    let (large, body) = match t.strip_prefix("large:") {
        Some(b) => (true, b),
        None => (false, t),
    };
    let parts: Vec<&str> = body.split(':').collect();
    match parts.len() {
        2 if !large => {
            let a: u16 = parts[0]
                .parse()
                .map_err(|_| err("first half is not a number from 0 to 65535"))?;
            let b: u16 = parts[1]
                .parse()
                .map_err(|_| err("second half is not a number from 0 to 65535"))?;
            Ok(format!("{a}:{b}"))
        }
        3 => {
            let mut v = [0u32; 3];
            for (slot, p) in v.iter_mut().zip(&parts) {
                *slot = p
                    .parse()
                    .map_err(|_| err("large community parts must be numbers up to 4294967295"))?;
            }
            Ok(format!("{}:{}:{}", v[0], v[1], v[2]))
        }
        _ => Err(err(
            "expected asn:value, large:global:local1:local2, or a defined alias",
        )),
    }
}

fn label_selector(
    v: &Value,
    at: &str,
    camel: bool,
    notes: &mut Vec<String>,
) -> Result<NodeSelector> {
    let (labels_key, exprs_key) = if camel {
        ("matchLabels", "matchExpressions")
    } else {
        ("match-labels", "match-expressions")
    };
    let mut o = Obj::new(v, at)?;
    let mut sel = NodeSelector::default();
    for (_, k, val) in o.string_map(labels_key)? {
        sel.match_labels.insert(k, val);
    }
    for (eat, ev) in o.list(exprs_key)? {
        let mut e = Obj::new(ev, eat.clone())?;
        let key = e.req_str("key")?;
        let op_at = e.path("operator");
        let op_text = e.req_str("operator")?;
        let operator = match op_text.to_ascii_lowercase().as_str() {
            "in" => LabelOperator::In,
            "notin" => LabelOperator::NotIn,
            "exists" => LabelOperator::Exists,
            "doesnotexist" => LabelOperator::DoesNotExist,
            _ => {
                return Err(ImportError::Invalid {
                    at: op_at,
                    value: truncate(&op_text),
                    reason: "expected In, NotIn, Exists or DoesNotExist".into(),
                });
            }
        };
        let values: Vec<String> = e.str_list("values")?.into_iter().map(|(_, s)| s).collect();
        match operator {
            LabelOperator::In | LabelOperator::NotIn if values.is_empty() => {
                return Err(ImportError::Invalid {
                    at: e.path("values"),
                    value: String::new(),
                    reason: format!("operator {op_text} needs at least one value"),
                });
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist if !values.is_empty() => {
                return Err(ImportError::Invalid {
                    at: e.path("values"),
                    value: values.join(","),
                    reason: format!("operator {op_text} takes no values"),
                });
            }
            _ => {}
        }
        e.finish(notes);
        sel.match_expressions.push(LabelExpression {
            key,
            operator,
            values,
        });
    }
    o.finish(notes);
    Ok(sel)
}

fn selectors(
    o: &mut Obj<'_>,
    key: &'static str,
    camel: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<NodeSelector>> {
    o.list(key)?
        .into_iter()
        .map(|(at, v)| label_selector(v, &at, camel, notes))
        .collect()
}

/// Where a pool's keys come from (`p` is the pool's entry or spec).
fn pool_origin(p: &Obj<'_>, camel: bool) -> Origin {
    let k = |c: &'static str, kebab: &'static str| if camel { c } else { kebab };
    let mut o = Origin::new(p.at.clone());
    o.key("addresses", p.path("addresses"));
    o.key("auto_assign", p.path(k("autoAssign", "auto-assign")));
    o.key(
        "avoid_buggy_ips",
        p.path(k("avoidBuggyIPs", "avoid-buggy-ips")),
    );
    o
}

/// The file lb reads a peer's TCP-MD5 key from (RFC 2385).
fn password_file(address: &str) -> String {
    format!("/etc/lb/bgp-peer-{address}.key")
}

/// MetalLB's BFD profile defaults (internal/config: BFDProfileWithDefaults).
const BFD_DEFAULT_INTERVAL_MS: u64 = 300;
const BFD_DEFAULT_MULTIPLIER: u64 = 3;

#[derive(Clone, Debug)]
struct BfdProfile {
    at: String,
    receive_ms: Option<u64>,
    transmit_ms: Option<u64>,
    multiplier: Option<u64>,
    /// Settings lb's BFD has no knob for (echo mode, passive mode, minimum TTL).
    unsupported: Vec<&'static str>,
}

fn bfd_profile(o: &mut Obj<'_>, camel: bool) -> Result<BfdProfile> {
    let k = |camel_key: &'static str, kebab: &'static str| if camel { camel_key } else { kebab };
    let receive_ms = o.uint(k("receiveInterval", "receive-interval"), 60_000)?;
    let transmit_ms = o.uint(k("transmitInterval", "transmit-interval"), 60_000)?;
    let multiplier = o.uint(k("detectMultiplier", "detect-multiplier"), 255)?;
    let mut unsupported = Vec::new();
    for key in [
        k("echoInterval", "echo-interval"),
        k("echoMode", "echo-mode"),
        k("passiveMode", "passive-mode"),
        k("minimumTtl", "minimum-ttl"),
    ] {
        if o.get(key).is_some() {
            unsupported.push(key);
        }
    }
    Ok(BfdProfile {
        at: o.at.clone(),
        receive_ms,
        transmit_ms,
        multiplier,
        unsupported,
    })
}

// ---------------------------------------------------------------------------------------------
// Collected input.

#[derive(Default)]
struct State {
    notes: Vec<String>,
    found_metallb: bool,
    unrecognized: Vec<String>,
    /// alias → (value, where defined)
    communities: BTreeMap<String, (String, String)>,
    /// ConfigMap pools: final already.
    pools: Vec<(String, PoolOut)>,
    peers: Vec<PeerIn>,
    bfd: BTreeMap<String, BfdProfile>,
    crd_pools: Vec<CrdPool>,
    l2_ads: Vec<L2Ad>,
    bgp_ads: Vec<BgpAd>,
    /// BGPPeer names left out (unnumbered).
    skipped_peers: BTreeSet<String>,
    /// What keeps the output from being a valid lb.toml, naming the input: references to
    /// resources missing from the input, and whatever lb's validator rejects.
    left: Vec<String>,
}

struct PeerIn {
    /// metadata.name for CRDs (BGPAdvertisement.spec.peers refers to it).
    name: Option<String>,
    out: PeerOut,
    bfd_profile: Option<(String, String)>,
}

struct CrdPool {
    at: String,
    labels: BTreeMap<String, String>,
    out: PoolOut,
}

struct PoolRefs {
    at: String,
    names: Vec<(String, String)>,
    selectors: Vec<NodeSelector>,
}

struct L2Ad {
    at: String,
    pools: PoolRefs,
    node_selectors: Vec<NodeSelector>,
    interfaces: Vec<String>,
}

struct BgpAd {
    at: String,
    pools: PoolRefs,
    adv: AdvOut,
    /// (path, BGPPeer name) to resolve to addresses.
    peers: Vec<(String, String)>,
}

struct Meta {
    name: Option<String>,
    labels: BTreeMap<String, String>,
    label: String,
}

fn meta(doc: &Obj<'_>, kind: &str) -> Meta {
    // metadata is read leniently: only name, namespace and labels matter to the import.
    let m = doc.map.and_then(|m| m.get("metadata"));
    let field = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let name = field("name");
    let namespace = field("namespace");
    let mut labels = BTreeMap::new();
    if let Some(Value::Mapping(l)) = m.and_then(|m| m.get("labels")) {
        for (k, v) in l {
            if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                labels.insert(k.to_string(), v.to_string());
            }
        }
    }
    let label = match (&namespace, &name) {
        (Some(ns), Some(n)) => format!("{kind} {ns}/{n}"),
        (None, Some(n)) => format!("{kind} {n}"),
        _ => kind.to_string(),
    };
    Meta {
        name,
        labels,
        label,
    }
}

const CONFIG_KEYS: [&str; 4] = ["peers", "address-pools", "bgp-communities", "bfd-profiles"];

impl State {
    fn document(&mut self, v: &Value, at: &str) -> Result<()> {
        let map = match v {
            Value::Null => return Ok(()),
            Value::Mapping(m) => m,
            other => {
                self.unrecognized
                    .push(format!("{at} is {}, not a mapping", describe(other)));
                return Ok(());
            }
        };
        let kind = map.get("kind").and_then(Value::as_str);
        let api = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        match kind {
            None => {
                if CONFIG_KEYS.iter().any(|k| map.contains_key(*k)) {
                    self.found_metallb = true;
                    self.config(v, &format!("{at} (MetalLB config)"))
                } else {
                    self.unrecognized.push(format!(
                        "{at} has no kind and none of the MetalLB config keys ({})",
                        CONFIG_KEYS.join(", ")
                    ));
                    Ok(())
                }
            }
            Some("List") => {
                let mut doc = Obj::new(v, at)?;
                for (item_at, item) in doc.list("items")? {
                    self.document(item, &item_at)?;
                }
                Ok(())
            }
            Some("ConfigMap") => {
                let doc = Obj::new(v, at)?;
                let m = meta(&doc, "ConfigMap");
                let dat = format!("{at} ({})", m.label);
                let config = map
                    .get("data")
                    .and_then(|d| d.as_mapping())
                    .and_then(|d| d.get("config"));
                match config {
                    None => {
                        self.unrecognized.push(format!("{dat} has no data.config"));
                        Ok(())
                    }
                    Some(c) => {
                        let cat = format!("{dat}: data.config");
                        let text = scalar_string(c, &cat)?;
                        let inner: Value = serde_yaml::from_str(&text).map_err(|source| {
                            ImportError::EmbeddedYaml {
                                at: cat.clone(),
                                source,
                            }
                        })?;
                        self.found_metallb = true;
                        if let Some(Value::Mapping(d)) = map.get("data") {
                            for k in d.keys() {
                                if k.as_str() != Some("config") {
                                    self.notes.push(format!(
                                        "{dat}: data.{}: not part of MetalLB's config; ignored",
                                        key_name(k)
                                    ));
                                }
                            }
                        }
                        self.config(&inner, &cat)
                    }
                }
            }
            Some(k) if api.starts_with("metallb.io/") => {
                self.found_metallb = true;
                self.crd(v, at, k)
            }
            Some(k) => {
                self.unrecognized
                    .push(format!("{at} is a {k} (apiVersion {api:?})"));
                Ok(())
            }
        }
    }

    // ---- ConfigMap (v0.9–v0.12) ----------------------------------------------------------

    fn config(&mut self, v: &Value, at: &str) -> Result<()> {
        let mut o = Obj::new(v, at)?;
        // Profiles and aliases first: peers and pools refer to them.
        for (pat, pv) in o.list("bfd-profiles")? {
            let mut p = Obj::new(pv, pat.clone())?;
            let name = p.req_str("name")?;
            let prof = bfd_profile(&mut p, false)?;
            p.finish(&mut self.notes);
            self.add_bfd(name, prof, &pat)?;
        }
        for (cat, name, value) in o.string_map("bgp-communities")? {
            let value = community_value(&value, &cat)?;
            self.add_community(name, value, cat)?;
        }
        for (pat, pv) in o.list("peers")? {
            let peer = self.config_peer(pv, &pat)?;
            self.peers.push(peer);
        }
        for (pat, pv) in o.list("address-pools")? {
            let pool = self.config_pool(pv, &pat)?;
            self.pools.push((pat, pool));
        }
        o.finish(&mut self.notes);
        Ok(())
    }

    fn config_peer(&mut self, v: &Value, at: &str) -> Result<PeerIn> {
        let mut p = Obj::new(v, at)?;
        let my_asn = asn(p.get("my-asn"), p.path("my-asn"))?;
        let peer_asn = asn(p.get("peer-asn"), p.path("peer-asn"))?;
        let addr_at = p.path("peer-address");
        let address = ip(&p.req_str("peer-address")?, &addr_at)?.to_string();
        // MetalLB reads port 0 as "unset" (179).
        let port = p
            .uint("peer-port", u16::MAX as u64)?
            .map(|n| n as u16)
            .filter(|n| *n != 0);
        let mut origin = Origin::new(at);
        origin.key("my_asn", p.path("my-asn"));
        origin.key("peer_asn", p.path("peer-asn"));
        origin.key("address", addr_at);
        origin.key("port", p.path("peer-port"));
        let mut out = PeerOut {
            origin,
            my_asn,
            peer_asn: Some(peer_asn),
            dynamic_asn: None,
            address: address.clone(),
            port,
            hold_time: None,
            keepalive_time: None,
            router_id: None,
            source_address: None,
            password_file: None,
            ebgp_multihop: None,
            connect_time: None,
            graceful_restart: None,
            node_selectors: Vec::new(),
            bfd: None,
        };
        self.peer_common(&mut p, &mut out, false)?;
        let bfd_profile = p.str("bfd-profile")?.map(|n| (p.path("bfd-profile"), n));
        p.finish(&mut self.notes);
        Ok(PeerIn {
            name: None,
            out,
            bfd_profile,
        })
    }

    /// Keys shared by the ConfigMap peer and the BGPPeer CRD (kebab-case or camelCase).
    fn peer_common(&mut self, p: &mut Obj<'_>, out: &mut PeerOut, camel: bool) -> Result<()> {
        let k = |c: &'static str, kebab: &'static str| if camel { c } else { kebab };
        for (key, slot) in [
            (k("holdTime", "hold-time"), &mut out.hold_time),
            (
                k("keepaliveTime", "keepalive-time"),
                &mut out.keepalive_time,
            ),
        ] {
            if let Some(s) = p.str(key)? {
                *slot = Some(duration(&s, &p.path(key), &mut self.notes)?);
            }
        }
        for (lb_key, key) in [
            ("hold_time", k("holdTime", "hold-time")),
            ("keepalive_time", k("keepaliveTime", "keepalive-time")),
            ("router_id", k("routerID", "router-id")),
            ("source_address", k("sourceAddress", "source-address")),
            ("ebgp_multihop", k("ebgpMultiHop", "ebgp-multihop")),
            ("node_selectors", k("nodeSelectors", "node-selectors")),
            ("bfd", k("bfdProfile", "bfd-profile")),
            ("password_file", "password"),
        ] {
            out.origin.key(lb_key, p.path(key));
        }
        if let Some(h) = &out.hold_time {
            // RFC 4271 §4.2: the hold time is zero or at least three seconds.
            let ms = lb_duration_ms(h);
            if ms != 0 && ms < 3_000 {
                return Err(ImportError::Duration {
                    at: p.path(k("holdTime", "hold-time")),
                    value: h.clone(),
                    reason: "a hold time must be 0 or at least 3s (RFC 4271 section 4.2)",
                });
            }
        }
        let rid_key = k("routerID", "router-id");
        if let Some(s) = p.str(rid_key)? {
            let at = p.path(rid_key);
            match ip(&s, &at)? {
                IpAddr::V4(v4) => out.router_id = Some(v4.to_string()),
                IpAddr::V6(_) => {
                    return Err(ImportError::Invalid {
                        at,
                        value: truncate(&s),
                        reason: "a BGP identifier is a 32-bit IPv4-style address (RFC 4271)".into(),
                    });
                }
            }
        }
        let src_key = k("sourceAddress", "source-address");
        if let Some(s) = p.str(src_key)? {
            out.source_address = Some(ip(&s, &p.path(src_key))?.to_string());
        }
        if p.str("password")?.is_some_and(|s| !s.is_empty()) {
            let file = password_file(&out.address);
            self.notes.push(format!(
                "{}: the inline password is not copied into lb.toml; write it to {file} \
                 (mode 0600, owner lb) — lb reads TCP-MD5 keys from password_file",
                p.path("password")
            ));
            out.password_file = Some(file);
        }
        let mh_key = k("ebgpMultiHop", "ebgp-multihop");
        if p.bool(mh_key)? == Some(true) {
            if out.peer_asn == Some(out.my_asn) || out.dynamic_asn == Some("internal") {
                return Err(ImportError::Invalid {
                    at: p.path(mh_key),
                    value: "true".into(),
                    reason: "eBGP multihop set for an iBGP peer (my ASN equals peer ASN)".into(),
                });
            }
            // MetalLB's boolean becomes FRR's bare `ebgp-multihop`, whose TTL is 255.
            out.ebgp_multihop = Some(255);
            self.notes.push(format!(
                "{}: true became ebgp_multihop = 255 (FRR's default TTL for MetalLB's flag); \
                 lower it to the real hop count to tighten the session",
                p.path(mh_key)
            ));
        }
        out.node_selectors = selectors(
            p,
            k("nodeSelectors", "node-selectors"),
            camel,
            &mut self.notes,
        )?
        .iter()
        .map(selector_out)
        .collect();
        Ok(())
    }

    fn config_pool(&mut self, v: &Value, at: &str) -> Result<PoolOut> {
        let mut p = Obj::new(v, at)?;
        let name = p.req_str("name")?;
        let pool = self.protocol_pool(&mut p, name, false)?;
        p.finish(&mut self.notes);
        Ok(pool)
    }

    /// A pool that names its protocol: the ConfigMap's `address-pools[]` (kebab-case) or the
    /// deprecated AddressPool resource's spec (camelCase).
    fn protocol_pool(&mut self, p: &mut Obj<'_>, name: String, camel: bool) -> Result<PoolOut> {
        let k = |c: &'static str, kebab: &'static str| if camel { c } else { kebab };
        let proto_at = p.path("protocol");
        let proto = p.req_str("protocol")?;
        let protocol = match proto.as_str() {
            "layer2" => "layer2",
            "bgp" => "bgp",
            other => {
                return Err(ImportError::Invalid {
                    at: proto_at,
                    value: truncate(other),
                    reason: "expected layer2 or bgp".into(),
                });
            }
        };
        let addresses = self.addresses(p, "addresses")?;
        let auto_assign = p.bool(k("autoAssign", "auto-assign"))?;
        let avoid_buggy_ips = p
            .bool(k("avoidBuggyIPs", "avoid-buggy-ips"))?
            .filter(|b| *b);
        let mut bgp_advertisements = Vec::new();
        let ads_key = k("bgpAdvertisements", "bgp-advertisements");
        let ads = p.list(ads_key)?;
        if protocol == "layer2" && !ads.is_empty() {
            return Err(ImportError::Invalid {
                at: p.path(ads_key),
                value: format!("{} advertisement(s)", ads.len()),
                reason: "a layer2 pool cannot have bgp-advertisements (MetalLB rejects this too)"
                    .into(),
            });
        }
        for (aat, av) in ads {
            let mut a = Obj::new(av, aat)?;
            let mut adv = self.advertisement(&mut a, camel)?;
            if camel {
                adv.node_selectors = selectors(&mut a, "nodeSelectors", true, &mut self.notes)?
                    .iter()
                    .map(selector_out)
                    .collect();
            }
            a.finish(&mut self.notes);
            bgp_advertisements.push(adv);
        }
        Ok(PoolOut {
            origin: pool_origin(p, camel),
            name,
            protocol,
            addresses,
            auto_assign,
            avoid_buggy_ips,
            interfaces: Vec::new(),
            node_selectors: Vec::new(),
            bgp_advertisements,
            service_allocation: ServiceAllocationOut::default(),
        })
    }

    fn addresses(&mut self, p: &mut Obj<'_>, key: &'static str) -> Result<Vec<String>> {
        let list = p.str_list(key)?;
        if list.is_empty() {
            return Err(ImportError::Missing { at: p.path(key) });
        }
        let mut out = Vec::new();
        for (aat, a) in list {
            let (text, note) = address(&a, &aat)?;
            self.notes.extend(note);
            out.push(text);
        }
        Ok(out)
    }

    /// The advertisement fields common to the ConfigMap and the BGPAdvertisement CRD.
    fn advertisement(&mut self, a: &mut Obj<'_>, camel: bool) -> Result<AdvOut> {
        let k = |c: &'static str, kebab: &'static str| if camel { c } else { kebab };
        let aggregation_length = a
            .uint(k("aggregationLength", "aggregation-length"), 32)?
            .map(|n| n as u8);
        let aggregation_length_v6 = a
            .uint(k("aggregationLengthV6", "aggregation-length-v6"), 128)?
            .map(|n| n as u8);
        // CRD: localPref 0 means unset (omitempty).
        let local_pref = a
            .uint(k("localPref", "localpref"), u32::MAX as u64)?
            .map(|n| n as u32)
            .filter(|n| !camel || *n != 0);
        let raw_communities = a.str_list("communities")?;
        let mut origin = Origin::new(a.at.clone());
        for (lb_key, key) in [
            (
                "aggregation_length",
                k("aggregationLength", "aggregation-length"),
            ),
            (
                "aggregation_length_v6",
                k("aggregationLengthV6", "aggregation-length-v6"),
            ),
            ("local_pref", k("localPref", "localpref")),
            ("communities", "communities"),
            ("node_selectors", "nodeSelectors"),
            ("peers", "peers"),
        ] {
            origin.key(lb_key, a.path(key));
        }
        Ok(AdvOut {
            origin,
            aggregation_length,
            aggregation_length_v6,
            local_pref,
            communities: Vec::new(),
            raw_communities,
            node_selectors: Vec::new(),
            peers: Vec::new(),
        })
    }

    fn add_community(&mut self, name: String, value: String, at: String) -> Result<()> {
        if let Some((_, first)) = self.communities.get(&name) {
            return Err(ImportError::Duplicate {
                at,
                what: "community alias",
                name,
                first: first.clone(),
            });
        }
        self.communities.insert(name, (value, at));
        Ok(())
    }

    fn add_bfd(&mut self, name: String, prof: BfdProfile, at: &str) -> Result<()> {
        if let Some(first) = self.bfd.get(&name) {
            return Err(ImportError::Duplicate {
                at: at.to_string(),
                what: "BFD profile",
                name,
                first: first.at.clone(),
            });
        }
        self.bfd.insert(name, prof);
        Ok(())
    }

    // ---- CRDs (metallb.io/v1beta1, v1beta2) ----------------------------------------------

    fn crd(&mut self, v: &Value, at: &str, kind: &str) -> Result<()> {
        let mut doc = Obj::new(v, at)?;
        let m = meta(&doc, kind);
        let dat = format!("{at} ({})", m.label);
        doc.seen
            .extend(["apiVersion", "kind", "metadata", "status"]);
        let spec_v = doc.get("spec");
        let null = Value::Null;
        let mut spec = Obj::new(spec_v.unwrap_or(&null), format!("{dat}: spec"))?;
        match kind {
            "IPAddressPool" => {
                let name = self.crd_name(&m, &dat)?;
                let addresses = self.addresses(&mut spec, "addresses")?;
                let auto_assign = spec.bool("autoAssign")?;
                let avoid_buggy_ips = spec.bool("avoidBuggyIPs")?.filter(|b| *b);
                let service_allocation = match spec.obj("serviceAllocation")? {
                    Some(mut sa) => {
                        let out = ServiceAllocationOut {
                            // MetalLB's priority is an int; 0 means none.
                            priority: sa.uint("priority", i32::MAX as u64)?.filter(|p| *p > 0),
                            namespaces: sa
                                .str_list("namespaces")?
                                .into_iter()
                                .map(|(_, n)| n)
                                .collect(),
                            namespace_selectors: selectors(
                                &mut sa,
                                "namespaceSelectors",
                                true,
                                &mut self.notes,
                            )?
                            .iter()
                            .map(selector_out)
                            .collect(),
                            service_selectors: selectors(
                                &mut sa,
                                "serviceSelectors",
                                true,
                                &mut self.notes,
                            )?
                            .iter()
                            .map(selector_out)
                            .collect(),
                        };
                        sa.finish(&mut self.notes);
                        out
                    }
                    None => ServiceAllocationOut::default(),
                };
                self.crd_pools.push(CrdPool {
                    at: dat.clone(),
                    labels: m.labels,
                    out: PoolOut {
                        origin: pool_origin(&spec, true),
                        name,
                        protocol: "layer2",
                        addresses,
                        auto_assign,
                        avoid_buggy_ips,
                        interfaces: Vec::new(),
                        node_selectors: Vec::new(),
                        bgp_advertisements: Vec::new(),
                        service_allocation,
                    },
                });
            }
            "L2Advertisement" => {
                let pools = self.pool_refs(&mut spec, &dat)?;
                let node_selectors = selectors(&mut spec, "nodeSelectors", true, &mut self.notes)?;
                let interfaces = spec
                    .str_list("interfaces")?
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect();
                self.l2_ads.push(L2Ad {
                    at: dat.clone(),
                    pools,
                    node_selectors,
                    interfaces,
                });
            }
            "BGPAdvertisement" => {
                let pools = self.pool_refs(&mut spec, &dat)?;
                let mut adv = self.advertisement(&mut spec, true)?;
                adv.node_selectors = selectors(&mut spec, "nodeSelectors", true, &mut self.notes)?
                    .iter()
                    .map(selector_out)
                    .collect();
                let peers = spec.str_list("peers")?;
                self.bgp_ads.push(BgpAd {
                    at: dat.clone(),
                    pools,
                    adv,
                    peers,
                });
            }
            "AddressPool" => {
                // Deprecated (v1alpha1/v1beta1, before IPAddressPool): a pool with its
                // protocol and advertisements in one resource, like the ConfigMap's.
                let name = self.crd_name(&m, &dat)?;
                let pool = self.protocol_pool(&mut spec, name, true)?;
                self.pools.push((dat.clone(), pool));
            }
            "BGPPeer" => match self.crd_peer(&mut spec, &m)? {
                Some(p) => self.peers.push(p),
                None => {
                    // Left out with a note already; its other keys are not worth noting.
                    self.skipped_peers.extend(m.name);
                    return Ok(());
                }
            },
            "Community" => {
                for (cat, cv) in spec.list("communities")? {
                    let mut c = Obj::new(cv, cat.clone())?;
                    let name = c.req_str("name")?;
                    let vat = c.path("value");
                    let value = community_value(&c.req_str("value")?, &vat)?;
                    c.finish(&mut self.notes);
                    self.add_community(name, value, cat)?;
                }
            }
            "BFDProfile" => {
                let name = self.crd_name(&m, &dat)?;
                let prof = bfd_profile(&mut spec, true)?;
                self.add_bfd(name, prof, &dat)?;
            }
            other => {
                self.notes
                    .push(format!("{dat}: kind {other} has no lb equivalent; ignored"));
                return Ok(());
            }
        }
        spec.finish(&mut self.notes);
        doc.finish(&mut self.notes);
        Ok(())
    }

    fn crd_name(&self, m: &Meta, at: &str) -> Result<String> {
        m.name.clone().ok_or_else(|| ImportError::Missing {
            at: format!("{at}: metadata.name"),
        })
    }

    fn pool_refs(&mut self, spec: &mut Obj<'_>, at: &str) -> Result<PoolRefs> {
        let names = spec.str_list("ipAddressPools")?;
        let selectors = selectors(spec, "ipAddressPoolSelectors", true, &mut self.notes)?;
        Ok(PoolRefs {
            at: at.to_string(),
            names,
            selectors,
        })
    }

    fn crd_peer(&mut self, spec: &mut Obj<'_>, m: &Meta) -> Result<Option<PeerIn>> {
        let my_asn = asn(spec.get("myASN"), spec.path("myASN"))?;
        let dynamic = spec.str("dynamicASN")?;
        let (peer_asn, dynamic_asn) = match (spec.has("peerASN"), dynamic.as_deref()) {
            (true, Some(_)) => {
                return Err(ImportError::Invalid {
                    at: spec.path("dynamicASN"),
                    value: dynamic.unwrap_or_default(),
                    reason: "peerASN and dynamicASN are mutually exclusive".into(),
                });
            }
            (true, None) => (Some(asn(spec.get("peerASN"), spec.path("peerASN"))?), None),
            (false, Some("internal")) => (None, Some("internal")),
            (false, Some("external")) => (None, Some("external")),
            (false, Some(other)) => {
                return Err(ImportError::Invalid {
                    at: spec.path("dynamicASN"),
                    value: truncate(other),
                    reason: "expected internal or external".into(),
                });
            }
            (false, None) => {
                return Err(ImportError::Missing {
                    at: spec.path("peerASN"),
                });
            }
        };
        let address = match spec.str("peerAddress")? {
            Some(a) => ip(&a, &spec.path("peerAddress"))?.to_string(),
            None => {
                if let Some(iface) = spec.str("interface")? {
                    self.notes.push(format!(
                        "{}: unnumbered BGP over interface {:?} has no lb equivalent; \
                         this peer was left out",
                        spec.path("interface"),
                        truncate(&iface)
                    ));
                    return Ok(None);
                }
                return Err(ImportError::Missing {
                    at: spec.path("peerAddress"),
                });
            }
        };
        let port = spec
            .uint("peerPort", u16::MAX as u64)?
            .map(|n| n as u16)
            .filter(|n| *n != 0);
        let mut origin = Origin::new(spec.at.clone());
        for (lb_key, key) in [
            ("my_asn", "myASN"),
            ("peer_asn", "peerASN"),
            ("dynamic_asn", "dynamicASN"),
            ("address", "peerAddress"),
            ("port", "peerPort"),
            ("connect_time", "connectTime"),
            ("graceful_restart", "enableGracefulRestart"),
        ] {
            origin.key(lb_key, spec.path(key));
        }
        let connect_time = match spec.str("connectTime")? {
            Some(t) => Some(duration(&t, &spec.path("connectTime"), &mut self.notes)?),
            None => None,
        };
        // Mirrored when given; absent, lb's default (on) applies (migrate-from-metallb.md).
        let graceful_restart = spec.bool("enableGracefulRestart")?;
        let mut out = PeerOut {
            origin,
            my_asn,
            peer_asn,
            dynamic_asn,
            address: address.clone(),
            port,
            hold_time: None,
            keepalive_time: None,
            router_id: None,
            source_address: None,
            password_file: None,
            ebgp_multihop: None,
            connect_time,
            graceful_restart,
            node_selectors: Vec::new(),
            bfd: None,
        };
        let has_password = spec.has("password");
        self.peer_common(spec, &mut out, true)?;
        if let Some(mut sec) = spec.obj("passwordSecret")? {
            let name = sec.str("name")?;
            let ns = sec.str("namespace")?;
            sec.finish(&mut self.notes);
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                if has_password && out.password_file.is_some() {
                    return Err(ImportError::Invalid {
                        at: spec.path("passwordSecret"),
                        value: name,
                        reason: "password and passwordSecret are mutually exclusive".into(),
                    });
                }
                let file = password_file(&address);
                let secret = match ns {
                    Some(ns) => format!("{ns}/{name}"),
                    None => name,
                };
                self.notes.push(format!(
                    "{}: write the `password` key of Secret {secret} to {file} \
                     (mode 0600, owner lb) — lb reads TCP-MD5 keys from password_file",
                    spec.path("passwordSecret")
                ));
                out.password_file = Some(file);
            }
        }
        if let Some(vrf) = spec.str("vrf")?.filter(|v| !v.is_empty()) {
            self.notes.push(format!(
                "{}: lb has no VRF support; the session {vrf:?} is imported in the default VRF \
                 — check routing before use",
                spec.path("vrf")
            ));
        }
        for (key, what) in [
            (
                "disableMP",
                "lb always negotiates multiprotocol IPv4 and IPv6 (RFC 4760)",
            ),
            (
                "dualStackAddressFamily",
                "lb always negotiates multiprotocol IPv4 and IPv6 (RFC 4760)",
            ),
        ] {
            if let Some(v) = spec.get(key) {
                let shown = scalar_string(v, "").unwrap_or_else(|_| describe(v));
                self.notes
                    .push(format!("{}: {shown} ignored; {what}", spec.path(key)));
            }
        }
        let bfd_profile = spec
            .str("bfdProfile")?
            .filter(|n| !n.is_empty())
            .map(|n| (spec.path("bfdProfile"), n));
        Ok(Some(PeerIn {
            name: m.name.clone(),
            out,
            bfd_profile,
        }))
    }

    // ---- Resolution and output ------------------------------------------------------------

    fn finish(mut self) -> Result<Imported> {
        let mut out = Out {
            bgp_communities: std::mem::take(&mut self.communities),
            ..Out::default()
        };
        let mut pool_names: BTreeMap<String, String> = BTreeMap::new();
        let mut check_pool = |name: &str, at: &str| -> Result<()> {
            if let Some(first) = pool_names.get(name) {
                return Err(ImportError::Duplicate {
                    at: at.to_string(),
                    what: "pool",
                    name: name.to_string(),
                    first: first.clone(),
                });
            }
            pool_names.insert(name.to_string(), at.to_string());
            Ok(())
        };
        for (at, p) in std::mem::take(&mut self.pools) {
            check_pool(&p.name, &at)?;
            out.pools.push(p);
        }
        for p in &self.crd_pools {
            check_pool(&p.out.name, &p.at)?;
        }
        let crd_pools = self.resolve_crd_pools()?;
        out.pools.extend(crd_pools);
        for adv in out
            .pools
            .iter_mut()
            .flat_map(|p| p.bgp_advertisements.iter_mut())
        {
            for (cat, c) in std::mem::take(&mut adv.raw_communities) {
                let c = c.trim();
                // An alias stays an alias: lb resolves [bgp_communities] itself.
                adv.communities
                    .push(if out.bgp_communities.contains_key(c) {
                        c.to_string()
                    } else {
                        community_value(c, &cat)?
                    });
            }
        }
        let peers = std::mem::take(&mut self.peers);
        for mut p in peers {
            if let Some((pat, name)) = &p.bfd_profile {
                p.out.bfd = Some(self.bfd_for(pat, name));
            }
            out.peers.push(p.out);
        }
        let (body, origins) = render(&out)?;
        self.check_output(&body, &origins);
        if !self.left.is_empty() {
            return Err(ImportError::Unfinished {
                problems: std::mem::take(&mut self.left),
            });
        }
        let mut text = String::new();
        text.push_str(
            "# lb.toml imported from a MetalLB configuration by `lbctl import-metallb`.\n",
        );
        text.push_str(
            "# Review it, then add [node], [kubernetes] and [cluster] for this site (see lb.toml(5)).\n",
        );
        if self.notes.is_empty() {
            text.push_str("# Notes: none; everything had an lb equivalent.\n");
        } else {
            text.push_str("#\n# Notes (what has no lb equivalent or was changed):\n");
            for n in &self.notes {
                text.push_str("# - ");
                text.push_str(&comment_safe(n));
                text.push('\n');
            }
        }
        if !body.is_empty() {
            text.push('\n');
            text.push_str(&body);
        }
        Ok(Imported {
            toml: text,
            notes: self.notes,
        })
    }

    /// Runs lb's own validator (what `lbd --check-config` runs) on the output: an error is
    /// something left to do, reported at the input it came from; a warning becomes a note.
    /// Files are not checked: the notes say which ones to create.
    fn check_output(&mut self, body: &str, origins: &[String]) {
        let ctx = lb_config::Context {
            // The output has no [node]: any valid host name stands for the host it goes to.
            hostname: "localhost".into(),
            check_files: false,
        };
        let diagnostics = match lb_config::parse_str(body, std::path::Path::new("lb.toml"), &ctx) {
            Ok(checked) => checked.warnings,
            Err(lb_config::Diagnostics(all)) => all,
        };
        for d in diagnostics {
            let at = d
                .line
                .checked_sub(1)
                .and_then(|i| origins.get(i))
                .map_or("the input as a whole", String::as_str);
            let message = input_lines(&d.message, origins);
            match d.severity {
                lb_config::Severity::Error => self.left.push(format!(
                    "{at}: lb.toml would not pass check-config: {message}"
                )),
                lb_config::Severity::Warning => self
                    .notes
                    .push(format!("{at}: lb.toml check warns: {message}")),
            }
        }
    }

    fn bfd_for(&mut self, at: &str, name: &str) -> BfdOut {
        let prof = self.bfd.get(name).cloned();
        let (r, t, m) = match &prof {
            Some(p) => (p.receive_ms, p.transmit_ms, p.multiplier),
            None => (None, None, None),
        };
        let out = BfdOut {
            receive_interval: milliseconds(r.unwrap_or(BFD_DEFAULT_INTERVAL_MS)),
            transmit_interval: milliseconds(t.unwrap_or(BFD_DEFAULT_INTERVAL_MS)),
            detect_multiplier: m.unwrap_or(BFD_DEFAULT_MULTIPLIER) as u32,
        };
        let desc = format!(
            "receive_interval {}, transmit_interval {}, detect_multiplier {}",
            out.receive_interval, out.transmit_interval, out.detect_multiplier
        );
        match prof {
            None => self.notes.push(format!(
                "{at}: BFD profile {name:?} is not in the input; emitted a bfd table with \
                 MetalLB's defaults ({desc})"
            )),
            Some(p) => {
                let mut n = format!(
                    "{at}: BFD profile {name:?} became a bfd table ({desc}; unset values are \
                     MetalLB's defaults)"
                );
                if !p.unsupported.is_empty() {
                    n.push_str(&format!(
                        "; {} of the profile at {} have no lb equivalent and were ignored",
                        p.unsupported.join(", "),
                        p.at
                    ));
                }
                self.notes.push(n);
            }
        }
        out
    }

    /// Which pools an advertisement applies to: the named ones plus the selector matches, or
    /// every pool when it names none (MetalLB's rule).
    fn applies(&mut self, refs: &PoolRefs, kind_note: &str) -> Vec<usize> {
        if refs.names.is_empty() && refs.selectors.is_empty() {
            return (0..self.crd_pools.len()).collect();
        }
        let mut hit = BTreeSet::new();
        for (nat, name) in &refs.names {
            match self.crd_pools.iter().position(|p| &p.out.name == name) {
                Some(i) => {
                    hit.insert(i);
                }
                None => self.left.push(format!(
                    "{nat}: IPAddressPool {name:?} is not in the input: expected it in the \
                     input, or the name removed from {kind_note}"
                )),
            }
        }
        if !refs.selectors.is_empty() {
            let matched: Vec<usize> = (0..self.crd_pools.len())
                .filter(|i| {
                    refs.selectors
                        .iter()
                        .any(|s| s.matches(&self.crd_pools[*i].labels))
                })
                .collect();
            let names: Vec<&str> = matched
                .iter()
                .map(|i| self.crd_pools[*i].out.name.as_str())
                .collect();
            self.notes.push(format!(
                "{}: spec.ipAddressPoolSelectors cannot follow label changes in lb; resolved \
                 once against the IPAddressPool labels in this input: {}",
                refs.at,
                if names.is_empty() {
                    "no pool matched".to_string()
                } else {
                    names.join(", ")
                }
            ));
            hit.extend(matched);
        }
        hit.into_iter().collect()
    }

    fn resolve_crd_pools(&mut self) -> Result<Vec<PoolOut>> {
        let n = self.crd_pools.len();
        let mut l2_for: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut bgp_for: Vec<Vec<usize>> = vec![Vec::new(); n];
        let l2_ads = std::mem::take(&mut self.l2_ads);
        let bgp_ads = std::mem::take(&mut self.bgp_ads);
        for (ai, ad) in l2_ads.iter().enumerate() {
            let hit = self.applies(&ad.pools, "the L2Advertisement");
            if !ad.interfaces.is_empty() && hit.len() > 1 {
                let names: Vec<&str> = hit
                    .iter()
                    .map(|i| self.crd_pools[*i].out.name.as_str())
                    .collect();
                self.notes.push(format!(
                    "{}: spec.interfaces ({}) applies to several pools; lb sets interfaces per \
                     pool, so each of {} got them",
                    ad.at,
                    ad.interfaces.join(", "),
                    names.join(", ")
                ));
            }
            for i in hit {
                l2_for[i].push(ai);
            }
        }
        let peer_addr: BTreeMap<String, String> = self
            .peers
            .iter()
            .filter_map(|p| p.name.clone().map(|n| (n, p.out.address.clone())))
            .collect();
        let mut resolved_bgp: Vec<AdvOut> = Vec::new();
        for ad in &bgp_ads {
            let mut adv = ad.adv.clone();
            for (pat, name) in &ad.peers {
                if let Some(a) = peer_addr.get(name) {
                    if !adv.peers.contains(a) {
                        adv.peers.push(a.clone());
                    }
                } else if self.skipped_peers.contains(name) {
                    self.notes.push(format!(
                        "{pat}: BGPPeer {name:?} was left out, so this advertisement does \
                         not name it"
                    ));
                } else {
                    self.left.push(format!(
                        "{pat}: BGPPeer {name:?} is not in the input: expected it in the \
                         input, or the name removed from the BGPAdvertisement"
                    ));
                }
            }
            if !ad.peers.is_empty() && adv.peers.is_empty() {
                // Only left-out peers: an empty list would mean "every peer" in lb.
                self.notes.push(format!(
                    "{}: every peer it names was left out; the advertisement was dropped",
                    ad.at
                ));
                continue;
            }
            let ai = resolved_bgp.len();
            resolved_bgp.push(adv);
            let hit = self.applies(&ad.pools, "the BGPAdvertisement");
            for i in hit {
                bgp_for[i].push(ai);
            }
        }
        let mut out = Vec::new();
        let pools = std::mem::take(&mut self.crd_pools);
        for (i, p) in pools.into_iter().enumerate() {
            let mut pool = p.out;
            if !bgp_for[i].is_empty() {
                pool.protocol = "bgp";
                pool.bgp_advertisements = bgp_for[i]
                    .iter()
                    .map(|a| resolved_bgp[*a].clone())
                    .collect();
                if !l2_for[i].is_empty() {
                    // lb pools have one protocol. BGP is kept: it is the mode that reaches
                    // clients beyond the segment, and routers on the segment learn the route
                    // too; announcing the same IP by ARP from one node as well would split
                    // traffic unpredictably. Splitting the pool cannot keep both (overlap).
                    let l2: Vec<&str> = l2_for[i].iter().map(|a| l2_ads[*a].at.as_str()).collect();
                    self.notes.push(format!(
                        "{}: pool {:?} has both BGP and L2 advertisements; lb pools have one \
                         protocol, so it is a bgp pool and the layer-2 announcement ({}) was \
                         dropped",
                        p.at,
                        pool.name,
                        l2.join("; ")
                    ));
                }
            } else if !l2_for[i].is_empty() {
                pool.protocol = "layer2";
                let ads: Vec<&L2Ad> = l2_for[i].iter().map(|a| &l2_ads[*a]).collect();
                // Union semantics: an advertisement without selectors (or interfaces) means
                // all nodes (interfaces), so the union is "all".
                if ads.iter().all(|a| !a.node_selectors.is_empty()) {
                    for a in &ads {
                        for s in &a.node_selectors {
                            let s = selector_out(s);
                            if !pool.node_selectors.contains(&s) {
                                pool.node_selectors.push(s);
                            }
                        }
                    }
                }
                if let Some(a) = ads.iter().find(|a| !a.node_selectors.is_empty()) {
                    pool.origin
                        .key("node_selectors", format!("{}: spec.nodeSelectors", a.at));
                }
                if let Some(a) = ads.iter().find(|a| !a.interfaces.is_empty()) {
                    pool.origin
                        .key("interfaces", format!("{}: spec.interfaces", a.at));
                }
                if ads.iter().all(|a| !a.interfaces.is_empty()) {
                    for a in &ads {
                        for ifc in &a.interfaces {
                            if !pool.interfaces.contains(ifc) {
                                pool.interfaces.push(ifc.clone());
                            }
                        }
                    }
                }
                let differ = ads.windows(2).any(|w| {
                    w[0].node_selectors != w[1].node_selectors || w[0].interfaces != w[1].interfaces
                });
                if differ {
                    let names: Vec<&str> = ads.iter().map(|a| a.at.as_str()).collect();
                    self.notes.push(format!(
                        "{}: pool {:?} is announced by several L2Advertisements with different \
                         nodes or interfaces ({}); lb keeps one set per pool, so their union \
                         was used (any listed node, any listed interface)",
                        p.at,
                        pool.name,
                        names.join("; ")
                    ));
                }
            } else {
                // No advertisement: MetalLB allocates from it and announces nothing; so
                // does lb's allocate-only pool.
                pool.protocol = "none";
            }
            out.push(pool);
        }
        Ok(out)
    }
}

/// A validator message with each "line N" of the output (e.g. "overlaps … (line 4)") replaced
/// by the input location that line came from: the user has the input, not our output.
fn input_lines(message: &str, origins: &[String]) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find("line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 5..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|n| origins.get(n.checked_sub(1)?))
        {
            Some(origin) => out.push_str(origin),
            None => out.push_str(&rest[i..i + 5 + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Milliseconds of a duration already in lb syntax (as produced by [`duration`]).
fn lb_duration_ms(s: &str) -> u128 {
    let mut total = 0u128;
    let mut num = 0u128;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            num = num.saturating_mul(10).saturating_add(d as u128);
            continue;
        }
        let scale = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1_000,
            'h' => 3_600_000,
            _ => 0,
        };
        total = total.saturating_add(num.saturating_mul(scale));
        num = 0;
    }
    total
}

/// A note as one comment line: control characters (a newline would end the comment and let
/// input text become TOML) are escaped.
fn comment_safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_keep_lb_spelling_or_are_rewritten_with_a_note() {
        let mut notes = Vec::new();
        assert_eq!(duration("90s", "x", &mut notes).unwrap(), "90s");
        assert_eq!(duration("1m30s", "x", &mut notes).unwrap(), "1m30s");
        assert!(notes.is_empty());
        assert_eq!(duration("1.5m", "x", &mut notes).unwrap(), "1m30s");
        assert_eq!(duration("2500000us", "x", &mut notes).unwrap(), "2s500ms");
        assert_eq!(duration("0", "x", &mut notes).unwrap(), "0s");
        assert_eq!(notes.len(), 2);
        for bad in [
            "",
            "10",
            "-5s",
            "1d",
            "1.2.3s",
            "1ns",
            "s",
            "99999999999999999h",
        ] {
            assert!(
                matches!(
                    duration(bad, "x", &mut notes),
                    Err(ImportError::Duration { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn lb_duration_ms_reads_back_combined_units() {
        assert_eq!(lb_duration_ms("1m30s"), 90_000);
        assert_eq!(lb_duration_ms("2s500ms"), 2_500);
        assert_eq!(lb_duration_ms("1h"), 3_600_000);
    }

    #[test]
    fn community_values_accept_metallb_spellings() {
        assert_eq!(community_value("64500:100", "x").unwrap(), "64500:100");
        assert_eq!(
            community_value("large:64500:1:2", "x").unwrap(),
            "64500:1:2"
        );
        assert_eq!(community_value("no-export", "x").unwrap(), "65535:65281");
        for bad in ["65536:1", "a:b", "1:2:3:4", "large:1:2", "", "x"] {
            assert!(community_value(bad, "x").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_normalize_and_reject_garbage() {
        assert_eq!(address("10.0.0.0/24", "x").unwrap().0, "10.0.0.0/24");
        let (a, note) = address("10.0.0.5/24", "x").unwrap();
        assert_eq!(a, "10.0.0.0/24");
        assert!(note.is_some());
        assert_eq!(
            address("10.0.0.1 - 10.0.0.9", "x").unwrap().0,
            "10.0.0.1-10.0.0.9"
        );
        assert_eq!(address("FD00:10::/120", "x").unwrap().0, "fd00:10::/120");
        for bad in [
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-fd00::1",
            "10.0.0.1",
            "x/24",
            "10.0.0.0/33",
        ] {
            assert!(address(bad, "x").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validator_line_numbers_become_input_locations() {
        let origins = vec!["a".to_string(), "doc 2: spec.addresses".to_string()];
        assert_eq!(
            input_lines("x overlaps y (line 2): expected z", &origins),
            "x overlaps y (doc 2: spec.addresses): expected z"
        );
        assert_eq!(input_lines("line 9 and line", &origins), "line 9 and line");
    }

    #[test]
    fn every_output_line_has_an_origin() {
        let mut w = TomlWriter::default();
        w.header("[[pool]]", &Origin::new("doc 1"));
        w.kv("name", "a\nb\nc").unwrap();
        w.header("[[bgp_peer]]", &Origin::new("doc 2"));
        w.kv("address", "10.0.0.1").unwrap();
        assert_eq!(w.lines.len(), w.out.lines().count(), "{}", w.out);
        assert_eq!(w.lines.last().map(String::as_str), Some("doc 2"));
    }

    #[test]
    fn comments_cannot_smuggle_toml_lines() {
        assert_eq!(comment_safe("a\n[pool]\r"), "a\\n[pool]\\r");
    }
}
