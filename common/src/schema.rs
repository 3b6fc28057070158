//! The Avro schemas K2 ships in `schemas/`, compiled into the binaries so the code and the
//! schemas it was written for cannot drift apart. Previous released versions live in
//! `schemas/history/` and every change must stay BACKWARD compatible with all of them.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::data_type::DataType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinSchema {
    pub name: &'static str,
    /// The `.avsc` text, exactly as in `schemas/`.
    pub text: &'static str,
}

impl BuiltinSchema {
    pub const TRADE: BuiltinSchema = BuiltinSchema {
        name: "trade",
        text: include_str!("../../schemas/trade.avsc"),
    };
    pub const QUOTE: BuiltinSchema = BuiltinSchema {
        name: "quote",
        text: include_str!("../../schemas/quote.avsc"),
    };
    pub const REFERENCE_DATA: BuiltinSchema = BuiltinSchema {
        name: "reference_data",
        text: include_str!("../../schemas/reference_data.avsc"),
    };

    pub fn all() -> [BuiltinSchema; 3] {
        DataType::ALL.map(|d| d.describe().schema)
    }

    pub fn by_name(name: &str) -> Option<BuiltinSchema> {
        Self::all().into_iter().find(|s| s.name == name)
    }

    pub fn for_data_type(data_type: DataType) -> BuiltinSchema {
        data_type.describe().schema
    }

    pub fn parse(&self) -> Schema {
        Schema::parse_str(self.text).expect("shipped schemas are valid (checked by tests)")
    }

    /// True if the record has a required (non-union) string field with this name.
    pub fn has_string_field(&self, field: &str) -> bool {
        match self.parse() {
            Schema::Record(r) => r
                .fields
                .iter()
                .any(|f| f.name == field && matches!(f.schema, Schema::String)),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompatibilityError {
    #[error("schema does not parse: {0}")]
    Parse(String),
    #[error("a reader with the new schema cannot read data written with {old}: {reason}")]
    NotBackward { old: String, reason: String },
}

/// BACKWARD compatibility: consumers using `new` can read everything written with `old`
/// (fields added with defaults, fields removed).
///
/// apache-avro 0.21 answers "inconclusive" for any decimal-to-decimal pair, so decimals are
/// checked here (same scale; precision may only grow) and the library checks the rest of
/// the schemas with the decimal annotations removed.
pub fn check_backward(old_label: &str, old: &str, new: &str) -> Result<(), CompatibilityError> {
    let parse_json = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .map_err(|e| CompatibilityError::Parse(e.to_string()))
    };
    let (mut old_json, mut new_json) = (parse_json(old)?, parse_json(new)?);
    let mut old_decimals = BTreeMap::new();
    let mut new_decimals = BTreeMap::new();
    strip_decimals(&mut old_json, String::new(), &mut old_decimals);
    strip_decimals(&mut new_json, String::new(), &mut new_decimals);
    for (path, (wp, ws)) in &old_decimals {
        if let Some((rp, rs)) = new_decimals.get(path)
            && (rs != ws || rp < wp)
        {
            return Err(CompatibilityError::NotBackward {
                old: old_label.to_string(),
                reason: format!(
                    "decimal {path} changed from ({wp},{ws}) to ({rp},{rs}): the scale must stay \
                     and the precision may only grow"
                ),
            });
        }
    }
    let old_schema =
        Schema::parse(&old_json).map_err(|e| CompatibilityError::Parse(e.to_string()))?;
    let new_schema =
        Schema::parse(&new_json).map_err(|e| CompatibilityError::Parse(e.to_string()))?;
    SchemaCompatibility::can_read(&old_schema, &new_schema).map_err(|e| {
        CompatibilityError::NotBackward {
            old: old_label.to_string(),
            reason: e.to_string(),
        }
    })
}

/// Replaces every decimal type by its underlying type, noting (precision, scale) by path.
fn strip_decimals(
    v: &mut serde_json::Value,
    path: String,
    found: &mut BTreeMap<String, (u64, u64)>,
) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if map.get("logicalType").and_then(Value::as_str) == Some("decimal") {
                let num = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
                found.insert(path.clone(), (num("precision"), num("scale")));
                map.remove("logicalType");
                map.remove("precision");
                map.remove("scale");
            }
            let name = map.get("name").and_then(Value::as_str).map(str::to_string);
            for (k, child) in map.iter_mut() {
                let p = match (&name, k.as_str()) {
                    (Some(n), "type") => format!("{path}.{n}"),
                    _ => path.clone(),
                };
                strip_decimals(child, p, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                strip_decimals(item, path.clone(), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn shipped_schemas_parse_with_the_expected_namespace() {
        for s in BuiltinSchema::all() {
            let Schema::Record(r) = s.parse() else {
                panic!("{} is not a record", s.name)
            };
            assert_eq!(
                r.name.namespace.as_deref(),
                Some("com.k2.market_data"),
                "{}",
                s.name
            );
            assert!(s.has_string_field("symbol"), "{}", s.name);
        }
    }

    /// Every schema must be readable-compatible with every released version in
    /// `schemas/history/` (BACKWARD_TRANSITIVE in registry terms, stricter than needed).
    #[test]
    fn every_schema_is_backward_compatible_with_its_history() {
        let history = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/history");
        for s in BuiltinSchema::all() {
            let mut versions: Vec<_> = std::fs::read_dir(&history)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&format!("{}.v", s.name))
                })
                .collect();
            versions.sort();
            assert!(!versions.is_empty(), "no history for {}", s.name);
            for v in &versions {
                let old = std::fs::read_to_string(v).unwrap();
                check_backward(&v.display().to_string(), &old, s.text)
                    .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
    }

    #[test]
    fn a_new_field_without_default_is_rejected() {
        let old = BuiltinSchema::TRADE.text;
        let mut v: serde_json::Value = serde_json::from_str(old).unwrap();
        v["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "trade_id", "type": "long"}));
        let err = check_backward("v1", old, &v.to_string()).unwrap_err();
        assert!(
            matches!(err, CompatibilityError::NotBackward { .. }),
            "{err}"
        );

        v["fields"].as_array_mut().unwrap().pop();
        v["fields"].as_array_mut().unwrap().push(
            serde_json::json!({"name": "trade_id", "type": ["null", "long"], "default": null}),
        );
        check_backward("v1", old, &v.to_string()).unwrap();
    }

    #[test]
    fn a_decimal_scale_change_is_rejected() {
        let old = BuiltinSchema::TRADE.text;
        let new = old.replacen("\"scale\": 8", "\"scale\": 4", 1);
        assert_ne!(old, new);
        let err = check_backward("v1", old, &new).unwrap_err();
        assert!(err.to_string().contains("scale must stay"), "{err}");
    }
}
