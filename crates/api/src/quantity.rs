//! Resource quantities as Kubernetes writes them (`500m`, `2Gi`, `1.5`), parsed to exact milli-units.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A validated quantity; keeps the user's spelling and its exact value in milli-units.
#[derive(Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    millis: i128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

impl Quantity {
    /// Parses `text`, which must be a non-negative decimal number with an optional suffix.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        parse_millis(text)
            .map(|millis| Quantity {
                text: text.to_string(),
                millis,
            })
            .ok_or_else(|| QuantityError(text.to_string()))
    }

    /// A quantity of whole units (cores, bytes, devices).
    pub fn from_units(units: i64) -> Self {
        Quantity {
            text: units.to_string(),
            millis: i128::from(units) * 1000,
        }
    }

    /// A quantity in milli-units (`250m`).
    pub fn from_millis(millis: i64) -> Self {
        let text = if millis % 1000 == 0 {
            (millis / 1000).to_string()
        } else {
            format!("{millis}m")
        };
        Quantity {
            text,
            millis: i128::from(millis),
        }
    }

    /// The value in thousandths of a unit (CPU millicores).
    pub fn millis(&self) -> i128 {
        self.millis
    }

    /// The value in whole units, rounded up (bytes, GPUs).
    pub fn units_ceil(&self) -> i128 {
        (self.millis + 999).div_euclid(1000)
    }

    /// The value as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn parse_millis(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    // value = (whole.frac) * multiplier, computed in units of 10^-9 to stay exact.
    let whole_v: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32)
    };
    let nanos = whole_v.checked_mul(1_000_000_000)?.checked_add(frac_v)?;
    let (num, den): (i128, i128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        _ => return None,
    };
    // millis = nanos * num / den / 10^6, rounded up so that a request is never under-counted.
    let scaled = nanos.checked_mul(num)?;
    let div = den.checked_mul(1_000_000)?;
    Some((scaled + div - 1).div_euclid(div))
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({})", self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_millis: Option<i128>) {
        assert_eq!(
            Quantity::parse(input).ok().map(|q| q.millis()),
            expected_millis,
            "input {input:?}"
        );
    }

    #[test]
    fn parses_kubernetes_spellings() {
        check("1", Some(1000));
        check("500m", Some(500));
        check("0.5", Some(500));
        check("1.5", Some(1500));
        check(".5", Some(500));
        check("2Gi", Some(2 * 1024 * 1024 * 1024 * 1000));
        check("128Mi", Some(128 * 1024 * 1024 * 1000));
        check("1k", Some(1_000_000));
        check("1G", Some(1_000_000_000_000));
        check("0", Some(0));
        check("1.5Gi", Some(1536 * 1024 * 1024 * 1000));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "", "12XB", "-1", "1.2.3", "abc", "m", "1 Gi", "1e3", "Gi", ".",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn units_round_up() {
        assert_eq!(Quantity::parse("1500m").unwrap().units_ceil(), 2);
        assert_eq!(Quantity::parse("2").unwrap().units_ceil(), 2);
        assert_eq!(Quantity::from_millis(250).as_str(), "250m");
        assert_eq!(Quantity::from_units(4).millis(), 4000);
    }
}
