//! Plain-text output helpers: kubectl's human durations, borderless tables, byte sizes.

use chrono::{DateTime, Utc};

/// A table as data: upper-case headers and rows of cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Column widths wide enough for the headers and every row.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            grow_widths(&mut widths, row);
        }
        widths
    }

    /// The table as kubectl prints it: columns three spaces apart, no borders.
    pub fn render(&self, headers: bool) -> String {
        let widths = self.widths();
        let mut out = String::new();
        if headers {
            out.push_str(&render_row(&self.headers, &widths));
        }
        for row in &self.rows {
            out.push_str(&render_row(row, &widths));
        }
        out
    }
}

/// Widens `widths` to fit `row`.
pub fn grow_widths(widths: &mut Vec<usize>, row: &[String]) {
    for (i, cell) in row.iter().enumerate() {
        let len = cell.chars().count();
        match widths.get_mut(i) {
            Some(w) => *w = (*w).max(len),
            None => widths.push(len),
        }
    }
}

/// One line of a table; the last cell is not padded.
pub fn render_row(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(cell);
            line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 3));
        }
    }
    let trimmed = line.trim_end().len();
    line.truncate(trimmed);
    line.push('\n');
    line
}

/// The age of `then` at `now` as kubectl prints it (`45s`, `3m20s`, `2h`, `4d`, `<unknown>`).
pub fn age(then: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match then {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// kubectl's `duration.HumanDuration`: two significant units at most, coarser as time passes.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let years = hours / 24 / 365;
        return match (hours / 24) % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// A byte count in the largest binary unit that keeps it readable (`512Mi`, `15.6Gi`).
pub fn bytes(n: i128) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    if n < 1024 {
        return n.to_string();
    }
    let mut value = n as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if (value - value.round()).abs() < 0.05 {
        format!("{}{unit}", value.round() as i64)
    } else {
        format!("{value:.1}{unit}")
    }
}

/// A timestamp as kubectl describe prints it: `Mon, 02 Jan 2006 15:04:05 +0000`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn human_durations() {
        let cases: [(i64, &str); 16] = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (180, "3m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (7 * 3600 + 5 * 60, "7h5m"),
            (20 * 3600, "20h"),
            (4 * 86400, "4d"),
            (4 * 86400 + 3 * 3600, "4d3h"),
            (100 * 86400, "100d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ];
        for (secs, expected) in cases {
            assert_eq!(
                human_duration(TimeDelta::seconds(secs)),
                expected,
                "{secs}s"
            );
        }
    }

    #[test]
    fn missing_time_is_unknown() {
        assert_eq!(age(None, Utc::now()), "<unknown>");
    }

    #[test]
    fn tables_have_no_borders_and_three_space_gutters() {
        let mut t = Table::new(&["NAME", "STATUS", "AGE"]);
        t.rows
            .push(vec!["a-long-name".into(), "Running".into(), "5m".into()]);
        t.rows.push(vec!["b".into(), "".into(), "10s".into()]);
        let expected = "NAME          STATUS    AGE\na-long-name   Running   5m\nb                       10s\n";
        assert_eq!(t.render(true), expected);
        assert_eq!(
            t.render(false),
            "a-long-name   Running   5m\nb                       10s\n"
        );
    }

    #[test]
    fn byte_sizes() {
        let cases: [(i128, &str); 5] = [
            (512, "512"),
            (2048, "2Ki"),
            (512 << 20, "512Mi"),
            (16_700_000_000, "15.6Gi"),
            (1 << 40, "1Ti"),
        ];
        for (n, expected) in cases {
            assert_eq!(bytes(n), expected, "{n}");
        }
    }
}
