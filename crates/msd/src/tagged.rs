//! Serde helpers for `kind`-tagged tables (network and data configs): hand-written
//! `Deserialize` impls decode the tag and then the fields, so that errors name the offending
//! field (serde's internally tagged enums lose the field path). Depends on nothing else in the
//! crate, so every config module can use it.

use serde::Deserialize;

/// Splits a `kind`-tagged table into its tag and the remaining fields (for hand-written
/// `Deserialize` impls of tagged enums).
pub(crate) fn split_tag<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<(String, serde_json::Value), D::Error> {
    use serde::de::Error as _;
    let mut v = serde_json::Value::deserialize(d)?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| D::Error::custom("expected a table with a `kind` field"))?;
    let kind = match obj.remove("kind") {
        Some(serde_json::Value::String(k)) => k,
        _ => return Err(D::Error::custom("missing string field `kind`")),
    };
    Ok((kind, v))
}

/// Decodes `T` from a JSON value; errors name the field path.
pub(crate) fn decode_named<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    v: serde_json::Value,
) -> std::result::Result<T, E> {
    serde_path_to_error::deserialize(v)
        .map_err(|e| E::custom(format!("field `{}`: {}", e.path(), e.inner())))
}
