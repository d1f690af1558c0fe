//! The `Key:  value` layout of `kumo describe`: nested sections with values aligned per level.

use super::format::Table;
use std::collections::BTreeMap;

/// The indent from which nested fields align with their parents.
const SHARED: usize = 4;

enum Line {
    /// `Key:` and a value; a value of several lines continues under its first line.
    Field {
        indent: usize,
        key: String,
        value: String,
    },
    /// Text as is.
    Text { indent: usize, text: String },
}

/// Collects lines, then aligns each level's values in one column.
#[derive(Default)]
pub struct Detail {
    lines: Vec<Line>,
}

impl Detail {
    /// `Key:  value` at nesting `level` (two spaces a level).
    pub fn field(&mut self, level: usize, key: &str, value: impl Into<String>) {
        self.lines.push(Line::Field {
            indent: level * 2,
            key: key.to_string(),
            value: value.into(),
        });
    }

    /// A field only when the value is there.
    pub fn field_opt(&mut self, level: usize, key: &str, value: Option<impl Into<String>>) {
        if let Some(v) = value {
            self.field(level, key, v);
        }
    }

    /// `Key:` opening a section.
    pub fn section(&mut self, level: usize, key: &str) {
        self.text(level, &format!("{key}:"));
    }

    pub fn text(&mut self, level: usize, text: &str) {
        self.lines.push(Line::Text {
            indent: level * 2,
            text: text.to_string(),
        });
    }

    /// A table indented at `level`.
    pub fn table(&mut self, level: usize, table: &Table) {
        for line in table.render(true).lines() {
            self.text(level, line);
        }
    }

    /// `key=value` lines, or `<none>`.
    pub fn map(&mut self, level: usize, key: &str, map: &BTreeMap<String, String>) {
        let value = if map.is_empty() {
            "<none>".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.field(level, key, value);
    }

    pub fn render(&self) -> String {
        // Each level aligns its values in one column; levels below the second share the
        // second's, as kubectl's container details do.
        let mut width: BTreeMap<usize, usize> = BTreeMap::new();
        for line in &self.lines {
            if let Line::Field { indent, key, .. } = line {
                let w = width.entry((*indent).min(SHARED)).or_default();
                *w = (*w).max(indent.saturating_sub(SHARED) + key.chars().count() + 1);
            }
        }
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Text { indent, text } => {
                    out.push_str(&" ".repeat(*indent));
                    out.push_str(text);
                }
                Line::Field { indent, key, value } => {
                    let base = (*indent).min(SHARED);
                    let column = base + width.get(&base).copied().unwrap_or(0) + 2;
                    let head = format!("{}{key}:", " ".repeat(*indent));
                    out.push_str(&head);
                    for (i, part) in value.split('\n').enumerate() {
                        if i == 0 {
                            if !part.is_empty() {
                                out.push_str(
                                    &" ".repeat(column.saturating_sub(head.chars().count())),
                                );
                            }
                        } else {
                            out.push('\n');
                            out.push_str(&" ".repeat(column));
                        }
                        out.push_str(part);
                    }
                }
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_align_per_level() {
        let mut d = Detail::default();
        d.field(0, "Name", "web");
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.map(0, "Labels", &labels);
        d.map(0, "Annotations", &BTreeMap::new());
        d.section(0, "Containers");
        d.section(1, "main");
        d.field(2, "Image", "busybox");
        d.field(2, "Restart Count", "0");
        d.field(0, "Empty", "");
        let expected = "\
Name:         web
Labels:       app=web
              tier=front
Annotations:  <none>
Containers:
  main:
    Image:          busybox
    Restart Count:  0
Empty:
";
        assert_eq!(d.render(), expected);
    }
}
