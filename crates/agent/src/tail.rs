//! Finding where the last N lines of a log begin, reading the file backwards in blocks.

use std::io::{Read, Seek, SeekFrom};

const BLOCK: u64 = 64 * 1024;

/// The offset at which the last `lines` lines of `file` start (0 when it has fewer).
/// A final line without a newline counts as a line.
pub fn tail_offset<F: Read + Seek>(file: &mut F, lines: u64) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    if len == 0 {
        return Ok(0);
    }
    // A trailing newline ends the last line; it does not start another.
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let mut end = if last[0] == b'\n' { len - 1 } else { len };
    let mut seen = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            if buf[i] == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn check(text: &str, lines: u64, expected: &str) {
        let mut c = Cursor::new(text.as_bytes().to_vec());
        let off = tail_offset(&mut c, lines).expect("tail") as usize;
        assert_eq!(&text[off..], expected, "{text:?} last {lines}");
    }

    #[test]
    fn last_lines() {
        check("a\nb\nc\n", 2, "b\nc\n");
        check("a\nb\nc\n", 3, "a\nb\nc\n");
        check("a\nb\nc\n", 10, "a\nb\nc\n");
        check("a\nb\nc", 1, "c");
        check("a\nb\nc", 2, "b\nc");
        check("a\nb\n", 0, "");
        check("", 3, "");
        check("\n\n", 1, "\n");
    }

    #[test]
    fn works_across_blocks() {
        let line = "x".repeat(1000);
        let text: String = (0..200).map(|i| format!("{i} {line}\n")).collect();
        let expected: String = (195..200).map(|i| format!("{i} {line}\n")).collect();
        check(&text, 5, &expected);
        let expected: String = (50..200).map(|i| format!("{i} {line}\n")).collect();
        check(&text, 150, &expected);
    }
}
