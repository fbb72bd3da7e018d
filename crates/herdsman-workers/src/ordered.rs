//! JSON values that keep their objects' key order, so that JSON this crate re-writes
//! (a command's pretty-printed output compacted onto one line, an object field substituted
//! into a command template) keeps the keys in the order the record or the command gave
//! them, without `serde_json`'s `preserve_order` feature. That feature is unified across
//! every crate built together, so turning it on here would change the key order of other
//! crates' output.
//!
//! A value is written exactly as `serde_json::Value` with `preserve_order` writes it:
//! numbers and strings go through `serde_json`'s own types, and a key given twice keeps
//! its first position and its last value.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// Objects with more keys than this index them in a hash map while they are read, so a
/// repeated key is found without a scan.
const SCAN_MAX: usize = 16;

/// A JSON value whose objects list their keys in the order they were read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ordered {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    /// Parse JSON text.
    pub(crate) fn from_slice(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    /// The value of `key` when this is an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Compact JSON text.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JSON value serializes")
    }
}

impl From<&Value> for Ordered {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Ordered::Null,
            Value::Bool(b) => Ordered::Bool(*b),
            Value::Number(n) => Ordered::Number(n.clone()),
            Value::String(s) => Ordered::String(s.clone()),
            Value::Array(a) => Ordered::Array(a.iter().map(Ordered::from).collect()),
            Value::Object(m) => {
                Ordered::Object(m.iter().map(|(k, v)| (k.clone(), v.into())).collect())
            }
        }
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Null => s.serialize_unit(),
            Ordered::Bool(b) => s.serialize_bool(*b),
            Ordered::Number(n) => n.serialize(s),
            Ordered::String(t) => s.serialize_str(t),
            Ordered::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Ordered::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
        Ok(Ordered::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
        Ok(Ordered::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
        Ok(Ordered::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
        // As `serde_json::Value`: a number that is not finite becomes null.
        Ok(Number::from_f64(n).map_or(Ordered::Null, Ordered::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
        Ok(Ordered::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Ordered, E> {
        Ok(Ordered::String(s))
    }

    fn visit_unit<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_none<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Ordered, D::Error> {
        Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Ordered::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut out: Vec<(String, Ordered)> = Vec::new();
        let mut index: Option<HashMap<String, usize>> = None;
        while let Some((k, v)) = map.next_entry::<String, Ordered>()? {
            if index.is_none() && out.len() >= SCAN_MAX {
                index = Some(
                    out.iter()
                        .enumerate()
                        .map(|(i, e)| (e.0.clone(), i))
                        .collect(),
                );
            }
            let at = match &index {
                Some(ix) => ix.get(&k).copied(),
                None => out.iter().position(|e| e.0 == k),
            };
            match at {
                // A repeated key: its first position, its last value.
                Some(i) => out[i].1 = v,
                None => {
                    if let Some(ix) = &mut index {
                        ix.insert(k.clone(), out.len());
                    }
                    out.push((k, v));
                }
            }
        }
        Ok(Ordered::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::Ordered;

    #[test]
    fn keys_keep_their_order_and_text_is_written_as_serde_json_writes_it() {
        let text = br#"{ "z": 1, "a": [1.5, -2, 1e2, "\u00e9\/"], "m": {"y": null, "b": true} }"#;
        let v = Ordered::from_slice(text).unwrap();
        assert_eq!(
            v.to_json(),
            r#"{"z":1,"a":[1.5,-2,100.0,"é/"],"m":{"y":null,"b":true}}"#
        );
        assert_eq!(v.get("m").unwrap().to_json(), r#"{"y":null,"b":true}"#);
        assert!(v.get("q").is_none());
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let v = Ordered::from_slice(br#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(v.to_json(), r#"{"b":3,"a":2}"#);
        // Large objects index their keys; the rule is the same.
        let mut text = String::from("{");
        for i in (0..40).rev() {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k39\":\"last\"}");
        let v = Ordered::from_slice(text.as_bytes()).unwrap();
        let json = v.to_json();
        assert!(json.starts_with(r#"{"k39":"last","k38":38,"#), "{json}");
        assert!(json.ends_with(r#""k0":0}"#), "{json}");
    }

    #[test]
    fn a_serde_json_value_converts_in_its_own_order() {
        let v: serde_json::Value = serde_json::from_str(r#"{"x":[1,{"k":"v"}]}"#).unwrap();
        assert_eq!(Ordered::from(&v).to_json(), v.to_string());
    }
}
