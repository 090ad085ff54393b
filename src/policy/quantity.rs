//! Kubernetes resource quantities (`512Mi`, `1.5Gi`, `400M`, `1e9`), as bytes, for the
//! memory bounds of `increase-memory`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses a memory quantity into bytes. Returns `None` for anything Kubernetes would not
/// accept as a memory quantity, or that is negative or not finite.
pub fn parse_bytes(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => 1e-3,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let bytes = value * multiplier;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes)
}

/// A memory quantity as a policy writes it (`4Gi`), with its bytes: parsed when the
/// policy is loaded, so no request parses it again.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryQuantity {
    text: String,
    bytes: f64,
}

/// A text that is not a memory quantity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a memory quantity such as 4Gi")]
pub struct QuantityError(String);

impl MemoryQuantity {
    /// Parses a memory quantity, as [`parse_bytes`] accepts it.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        parse_bytes(text)
            .map(|bytes| MemoryQuantity {
                text: text.to_string(),
                bytes,
            })
            .ok_or_else(|| QuantityError(text.to_string()))
    }

    /// The quantity in bytes.
    pub fn bytes(&self) -> f64 {
        self.bytes
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for MemoryQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for MemoryQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        MemoryQuantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MemoryQuantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn binary_decimal_and_plain_quantities() {
        assert_eq!(parse_bytes("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_bytes("1.5Gi"), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_bytes("400M"), Some(4e8));
        assert_eq!(parse_bytes("1e9"), Some(1e9));
        assert_eq!(parse_bytes("1024"), Some(1024.0));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("5Zi"), None);
        assert_eq!(parse_bytes("-1Gi"), None);
    }
}
