//! Resource quantities as Kubernetes writes them (`500m`, `2Gi`, `1.5`), parsed to exact milli-units.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A validated quantity; keeps the user's spelling and its exact value in milli-units.
#[derive(Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    millis: i128,
}

/// The largest quantity kumo takes, in milli-units: Kubernetes' bound (2^63-1 milli-units), so
/// that every sum and product of quantities kumo computes fits an `i128` with room to spare.
pub const MAX_MILLIS: i128 = i64::MAX as i128;

/// Why a string is not a quantity: the text, and for a well-formed number that is too large,
/// why it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {text:?}{}", reason.map(|r| format!(": {r}")).unwrap_or_default())]
pub struct QuantityError {
    pub text: String,
    pub reason: Option<&'static str>,
}

/// The reason given for a value over [`MAX_MILLIS`].
const TOO_LARGE: &str =
    "larger than the largest quantity, 9223372036854775807m (2^63-1 milli-units)";

impl Quantity {
    /// Parses `text`, which must be a non-negative decimal number with an optional suffix.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let error = |reason| QuantityError {
            text: text.to_string(),
            reason,
        };
        match parse_millis(text) {
            Some(Parsed::Millis(millis)) => Ok(Quantity {
                text: text.to_string(),
                millis,
            }),
            Some(Parsed::TooLarge) => Err(error(Some(TOO_LARGE))),
            None => Err(error(None)),
        }
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

/// What a well-formed quantity's text amounts to.
enum Parsed {
    Millis(i128),
    /// Over [`MAX_MILLIS`] (or beyond what the arithmetic can hold at all).
    TooLarge,
}

/// The value of `text` in milli-units; `None` when it is not a quantity. Every step is checked
/// arithmetic: a value too large for it is [`Parsed::TooLarge`], never a wrapped number.
fn parse_millis(text: &str) -> Option<Parsed> {
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
    // Only digits are left in `whole` and `frac`, so a failed parse means too many of them.
    let whole_v: i128 = if whole.is_empty() {
        0
    } else {
        match whole.parse() {
            Ok(v) => v,
            Err(_) => return Some(Parsed::TooLarge),
        }
    };
    // At most 9 digits: fits, and 10^(9 - len) is at most 10^9.
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32)
    };
    // value = (whole.frac) * multiplier, computed in units of 10^-9 to stay exact;
    // millis = nanos * num / den / 10^6, rounded up so that a request is never under-counted.
    let millis = whole_v
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_v))
        .and_then(|n| n.checked_mul(num))
        .and_then(|scaled| {
            let div = den * 1_000_000;
            scaled.checked_add(div - 1).map(|n| n.div_euclid(div))
        });
    Some(match millis {
        Some(m) if m <= MAX_MILLIS => Parsed::Millis(m),
        _ => Parsed::TooLarge,
    })
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

    /// The value in milli-units, or a fragment of the error's text.
    fn check(input: &str, expected: Result<i128, &str>) {
        match (Quantity::parse(input), expected) {
            (Ok(q), Ok(millis)) => assert_eq!(q.millis(), millis, "input {input:?}"),
            (Err(e), Err(fragment)) => {
                let text = e.to_string();
                assert!(text.contains(fragment), "input {input:?}: {text}");
            }
            (got, want) => panic!("input {input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_kubernetes_spellings() {
        check("1", Ok(1000));
        check("500m", Ok(500));
        check("0.5", Ok(500));
        check("1.5", Ok(1500));
        check(".5", Ok(500));
        check("2Gi", Ok(2 * 1024 * 1024 * 1024 * 1000));
        check("128Mi", Ok(128 * 1024 * 1024 * 1000));
        check("1k", Ok(1_000_000));
        check("1G", Ok(1_000_000_000_000));
        check("0", Ok(0));
        check("1.5Gi", Ok(1536 * 1024 * 1024 * 1000));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "", "12XB", "-1", "1.2.3", "abc", "m", "1 Gi", "1e3", "Gi", ".",
        ] {
            check(bad, Err(&format!("invalid quantity {bad:?}")));
        }
    }

    /// The issue's value is i128::MAX nano-units: rounding it up to milli-units used to wrap to a
    /// negative request in release builds.
    #[test]
    fn extremes_are_errors_naming_the_value_never_wrapped_numbers() {
        let too_large = "larger than the largest quantity, 9223372036854775807m";
        check(
            "170141183460469231731687303715.884105727",
            Err(r#"invalid quantity "170141183460469231731687303715.884105727": larger"#),
        );
        check("9223372036854775807m", Ok(i128::from(i64::MAX)));
        check("9223372036854775808m", Err(too_large));
        check("9223372036854775.807", Ok(i128::from(i64::MAX)));
        check("9223372036854775.8071", Err("invalid quantity"));
        check("9223372036854775807", Err(too_large));
        check("9223372036854775807Ei", Err(too_large));
        check("9999999999Ei", Err(too_large));
        check("8Ei", Err(too_large));
        // 2^63-1 milli-units is about 8 PiB (of memory) or 9.2e15 cores.
        check("1Ei", Err(too_large));
        check("8Pi", Ok((1i128 << 53) * 1000));
        check("9Pi", Err(too_large));
        check("9223372Ti", Err(too_large));
        check(&"9".repeat(60), Err(too_large));
        check(&format!("{}.5", "9".repeat(60)), Err(too_large));
        check(&format!("0{}1", "0".repeat(80)), Ok(1000));
        check("0.000000001", Ok(1));
        check("0.000001", Ok(1));
        check("0.0000000001", Err("invalid quantity \"0.0000000001\""));
        check("1e308", Err("invalid quantity \"1e308\""));
        check("1E3", Err("invalid quantity"));
        check("-1", Err("invalid quantity \"-1\""));
        check("-0", Err("invalid quantity"));
        check("+1", Err("invalid quantity"));
        check("NaN", Err("invalid quantity"));
        check("inf", Err("invalid quantity"));
        check("0x10", Err("invalid quantity"));
        check("１", Err("invalid quantity"));
        check("1mm", Err("invalid quantity"));
        check("0m", Ok(0));
        check("1m", Ok(1));
        check("0.1m", Ok(1));
    }

    #[test]
    fn json_numbers_are_bounded_too() {
        let parse = |json: &str| serde_json::from_str::<Quantity>(json).map(|q| q.millis());
        assert_eq!(parse("2").unwrap(), 2000);
        assert_eq!(parse("0.5").unwrap(), 500);
        for bad in ["18446744073709551615", "1e308", "-1", "-0.5", "1e-12"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid quantity"), "{bad}: {e}");
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
