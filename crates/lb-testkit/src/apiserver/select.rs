//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field selectors
//! (`metadata.name=x,metadata.namespace!=y`, any dotted path) on list and watch.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

fn parse_req(part: &str) -> Result<Req, String> {
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Req::Ne(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, set)) = part.split_once(" notin ") {
        let set = parse_set(set).ok_or_else(|| format!("bad set in {part:?}"))?;
        return Ok(Req::NotIn(k.trim().into(), set));
    }
    if let Some((k, set)) = part.split_once(" in ") {
        let set = parse_set(set).ok_or_else(|| format!("bad set in {part:?}"))?;
        return Ok(Req::In(k.trim().into(), set));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Req::NotExists(k.trim().into()));
    }
    if part.contains(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        return Err(format!("unable to parse requirement {part:?}"));
    }
    Ok(Req::Exists(part.to_string()))
}

impl Selector {
    /// Parses the `labelSelector` and `fieldSelector` query values (already URL-decoded).
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        let parse = |s: Option<&str>| -> Result<Vec<Req>, String> {
            s.map(|s| split_top(s).into_iter().map(parse_req).collect())
                .unwrap_or(Ok(Vec::new()))
        };
        Ok(Self {
            labels: parse(labels)?,
            fields: parse(fields)?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let field = |k: &str| {
            let v = k.split('.').try_fold(obj, |v, seg| v.get(seg));
            match v {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => Some(String::new()),
                Some(other) => Some(other.to_string()),
            }
        };
        self.labels.iter().all(|r| eval(r, &label)) && self.fields.iter().all(|r| eval(r, &field))
    }
}

fn eval(r: &Req, get: &dyn Fn(&str) -> Option<String>) -> bool {
    match r {
        Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Req::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Req::In(k, set) => get(k).is_some_and(|v| set.contains(&v)),
        Req::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(&v)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    }
}
