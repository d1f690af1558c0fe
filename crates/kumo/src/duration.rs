//! Durations on the command line: `500ms`, `40s`, `5m`, `1h`, `1m30s`.

use std::time::Duration;

/// Parses a Go-style duration as kubectl and Nomad accept them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err =
        || format!("invalid duration {text:?}: use a number with a unit, e.g. 500ms, 40s, 5m, 1h");
    if text.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        // Checked: `from_secs_f64` and `+` panic past Duration's range (about 584 billion years).
        total = Duration::try_from_secs_f64(value * scale)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| format!("invalid duration {text:?}: too long"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The longest `--timeout` a command waits: a year (a deadline further out could overflow the
/// clock, and nobody waits that long).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration for `--timeout`: [`parse_duration`], at most [`MAX_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > MAX_TIMEOUT {
        return Err(format!("invalid duration {text:?}: at most 8760h (a year)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_at_most_a_year() {
        assert_eq!(parse_timeout("8760h"), Ok(MAX_TIMEOUT));
        assert!(parse_timeout("8761h")
            .unwrap_err()
            .contains("at most 8760h"));
        assert!(parse_timeout("99999999999h").is_err());
        assert_eq!(parse_timeout("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations() {
        let cases: [(&str, Option<u64>); 10] = [
            ("500ms", Some(500)),
            ("40s", Some(40_000)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("1m30s", Some(90_000)),
            ("1.5s", Some(1500)),
            ("10", None),
            ("s", None),
            ("99999999999999999999999h", None),
            ("18446744073709551615s1s", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_duration(input).ok().map(|d| d.as_millis() as u64),
                expected,
                "{input}"
            );
        }
    }
}
