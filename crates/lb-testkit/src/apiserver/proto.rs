//! A tiny protobuf reader for the one protobuf body kubectl 1.32/1.33 sends: the Deployment of
//! `kubectl create deployment` (notes §1.6). Unknown fields are skipped; bad input is an error.

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("body does not start with the k8s protobuf magic")]
    NoMagic,
    #[error("truncated protobuf at byte {0}")]
    Truncated(usize),
    #[error("unsupported protobuf wire type {wire} at byte {at}")]
    WireType { wire: u64, at: usize },
    #[error("field {field} is not valid UTF-8")]
    Utf8 { field: u64 },
    #[error("type meta says {0:?}, expected apps/v1 Deployment")]
    WrongType(String),
}

enum Val<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(ProtoError::Truncated(self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Truncated(self.pos))
    }

    /// Next (field number, value), or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Val<'a>)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        let val = match wire {
            0 => Val::Varint(self.varint()?),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated(at))?;
                if end > self.buf.len() {
                    return Err(ProtoError::Truncated(self.pos));
                }
                self.pos = end;
                Val::Varint(0)
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated(at))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or(ProtoError::Truncated(self.pos))?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Val::Bytes(b)
            }
            _ => return Err(ProtoError::WireType { wire, at }),
        };
        Ok(Some((field, val)))
    }
}

fn string(field: u64, b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Utf8 { field })
}

/// Calls `f` with each length-delimited field; varints go to `v` if given.
fn each<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u64, &'a [u8]) -> Result<(), ProtoError>,
    mut v: impl FnMut(u64, u64),
) -> Result<(), ProtoError> {
    let mut r = Reader::new(buf);
    while let Some((field, val)) = r.next()? {
        match val {
            Val::Bytes(b) => f(field, b)?,
            Val::Varint(x) => v(field, x),
        }
    }
    Ok(())
}

fn map_entry(b: &[u8]) -> Result<(String, String), ProtoError> {
    let (mut k, mut v) = (String::new(), String::new());
    each(
        b,
        |f, b| {
            match f {
                1 => k = string(f, b)?,
                2 => v = string(f, b)?,
                _ => {}
            }
            Ok(())
        },
        |_, _| {},
    )?;
    Ok((k, v))
}

/// ObjectMeta: 1 name, 2 generateName, 3 namespace, 11 labels, 12 annotations.
fn object_meta(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    each(
        b,
        |f, b| {
            match f {
                1 if !b.is_empty() => {
                    m.insert("name".into(), json!(string(f, b)?));
                }
                2 if !b.is_empty() => {
                    m.insert("generateName".into(), json!(string(f, b)?));
                }
                3 if !b.is_empty() => {
                    m.insert("namespace".into(), json!(string(f, b)?));
                }
                11 => {
                    let (k, v) = map_entry(b)?;
                    labels.insert(k, json!(v));
                }
                12 => {
                    let (k, v) = map_entry(b)?;
                    annotations.insert(k, json!(v));
                }
                _ => {}
            }
            Ok(())
        },
        |_, _| {},
    )?;
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(m))
}

/// Container: 1 name, 2 image.
fn container(b: &[u8]) -> Result<Value, ProtoError> {
    let mut c = Map::new();
    each(
        b,
        |f, b| {
            match f {
                1 => {
                    c.insert("name".into(), json!(string(f, b)?));
                }
                2 if !b.is_empty() => {
                    c.insert("image".into(), json!(string(f, b)?));
                }
                _ => {}
            }
            Ok(())
        },
        |_, _| {},
    )?;
    c.insert("resources".into(), json!({}));
    Ok(Value::Object(c))
}

fn pod_spec(b: &[u8]) -> Result<Value, ProtoError> {
    let mut containers = Vec::new();
    each(
        b,
        |f, b| {
            if f == 2 {
                containers.push(container(b)?);
            }
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(json!({"containers": containers}))
}

fn template(b: &[u8]) -> Result<Value, ProtoError> {
    let mut t = json!({"metadata":{}, "spec":{}});
    each(
        b,
        |f, b| {
            match f {
                1 => t["metadata"] = object_meta(b)?,
                2 => t["spec"] = pod_spec(b)?,
                _ => {}
            }
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(t)
}

fn selector(b: &[u8]) -> Result<Value, ProtoError> {
    let mut ml = Map::new();
    each(
        b,
        |f, b| {
            if f == 1 {
                let (k, v) = map_entry(b)?;
                ml.insert(k, json!(v));
            }
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(json!({"matchLabels": ml}))
}

fn deployment_spec(b: &[u8]) -> Result<Value, ProtoError> {
    let mut spec = Map::new();
    let mut replicas = None;
    each(
        b,
        |f, b| {
            match f {
                2 => {
                    spec.insert("selector".into(), selector(b)?);
                }
                3 => {
                    spec.insert("template".into(), template(b)?);
                }
                _ => {}
            }
            Ok(())
        },
        |f, v| {
            if f == 1 {
                replicas = Some(v);
            }
        },
    )?;
    if let Some(r) = replicas {
        spec.insert("replicas".into(), json!(r as i32));
    }
    Ok(Value::Object(spec))
}

/// Decodes a `k8s\0`-prefixed protobuf `Unknown` carrying an apps/v1 Deployment into JSON.
pub fn decode_deployment(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoMagic)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    each(
        rest,
        |f, b| {
            match f {
                1 => each(
                    b,
                    |f, b| {
                        match f {
                            1 => api_version = string(f, b)?,
                            2 => kind = string(f, b)?,
                            _ => {}
                        }
                        Ok(())
                    },
                    |_, _| {},
                )?,
                2 => raw = b,
                _ => {}
            }
            Ok(())
        },
        |_, _| {},
    )?;
    if api_version != "apps/v1" || kind != "Deployment" {
        return Err(ProtoError::WrongType(format!("{api_version} {kind}")));
    }
    let mut d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{},"spec":{}});
    each(
        raw,
        |f, b| {
            match f {
                1 => d["metadata"] = object_meta(b)?,
                2 => d["spec"] = deployment_spec(b)?,
                _ => {}
            }
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(d)
}

/// Encoder used by the tests to build bodies shaped like kubectl's.
pub mod encode {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    pub fn uint(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }

    pub fn msg(field: u64, f: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) {
        let mut inner = Vec::new();
        f(&mut inner);
        bytes(field, &inner, out);
    }

    pub fn map_entry(field: u64, k: &str, v: &str, out: &mut Vec<u8>) {
        msg(
            field,
            |m| {
                bytes(1, k.as_bytes(), m);
                bytes(2, v.as_bytes(), m);
            },
            out,
        );
    }

    /// A body like kubectl 1.32's `create deployment NAME --image IMAGE`.
    pub fn kubectl_create_deployment(name: &str, image: &str) -> Vec<u8> {
        let meta = |m: &mut Vec<u8>| {
            bytes(1, name.as_bytes(), m);
            bytes(3, b"", m);
            map_entry(11, "app", name, m);
        };
        let mut raw = Vec::new();
        msg(1, meta, &mut raw);
        msg(
            2,
            |s| {
                uint(1, 1, s);
                msg(2, |sel| map_entry(1, "app", name, sel), s);
                msg(
                    3,
                    |t| {
                        msg(1, |m| map_entry(11, "app", name, m), t);
                        msg(
                            2,
                            |p| {
                                let cname = image.split([':', '/']).next().unwrap_or(image);
                                msg(
                                    2,
                                    |c| {
                                        bytes(1, cname.as_bytes(), c);
                                        bytes(2, image.as_bytes(), c);
                                    },
                                    p,
                                );
                            },
                            t,
                        );
                    },
                    s,
                );
            },
            &mut raw,
        );
        msg(3, |_| {}, &mut raw);
        let mut out = b"k8s\0".to_vec();
        msg(
            1,
            |tm| {
                bytes(1, b"apps/v1", tm);
                bytes(2, b"Deployment", tm);
            },
            &mut out,
        );
        bytes(2, &raw, &mut out);
        bytes(3, b"", &mut out);
        bytes(4, b"", &mut out);
        out
    }
}
