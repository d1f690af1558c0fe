//! The access log's writer: lines formatted straight into a shared buffer that a background
//! thread writes out at least every [`FLUSH_EVERY`], or the request that fills it does.
//!
//! Why not a `tracing` event per request: formatting through `tracing-subscriber` and one
//! `write(2)` per line to unbuffered stderr cost 15–18 % of the router's CPU. Here a request
//! costs a short, uncontended lock and some formatting; the system call is shared by hundreds
//! of lines, and a line still appears within about [`FLUSH_EVERY`].

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a line waits in the buffer.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written out at once by the request that filled it.
const FLUSH_AT: usize = 64 * 1024;

/// Where the router writes its access log: one line per request.
#[derive(Clone, Default)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// Standard error, beside the process's log, when the log filter enables the target
    /// `kumo_router::access` at level INFO (so `RUST_LOG=info,kumo_router::access=off` turns
    /// it off). Checked once, when the router starts.
    #[default]
    Stderr,
    /// Any writer (a file, a test's buffer), unconditionally.
    Writer(Arc<Mutex<dyn Write + Send>>),
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessLog::Off => f.write_str("Off"),
            AccessLog::Stderr => f.write_str("Stderr"),
            AccessLog::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

impl PartialEq for AccessLog {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (AccessLog::Off, AccessLog::Off) | (AccessLog::Stderr, AccessLog::Stderr) => true,
            (AccessLog::Writer(a), AccessLog::Writer(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for AccessLog {}

/// The running writer; cloned into every request's completion.
#[derive(Clone)]
pub(crate) struct LogWriter {
    inner: Arc<Inner>,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogWriter")
    }
}

struct Inner {
    /// Complete lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Held while writing, so that buffers go out in the order they were taken.
    out: Mutex<Box<dyn Write + Send>>,
}

struct Shared(Arc<Mutex<dyn Write + Send>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        lock(&self.0).flush()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds valid bytes.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogWriter {
    /// The writer for `config`, or `None` when there is no access log. Starts the flushing
    /// thread, which ends once the last clone of the writer is gone.
    pub fn start(config: &AccessLog) -> Option<LogWriter> {
        let out: Box<dyn Write + Send> = match config {
            AccessLog::Off => return None,
            AccessLog::Stderr => {
                if !tracing::enabled!(target: "kumo_router::access", tracing::Level::INFO) {
                    return None;
                }
                Box::new(std::io::stderr())
            }
            AccessLog::Writer(w) => Box::new(Shared(w.clone())),
        };
        let inner = Arc::new(Inner {
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            out: Mutex::new(out),
        });
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || flush_loop(weak));
        if let Err(e) = spawned {
            // Lines then go out only when the buffer fills: say so rather than fail the router.
            tracing::warn!(error = %e, "cannot start the access log's flushing thread");
        }
        Some(LogWriter { inner })
    }

    /// Appends one line: `write` formats it (without the newline) into the buffer.
    pub fn line(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut pending = lock(&self.inner.pending);
            write(&mut pending);
            pending.push(b'\n');
            pending.len() >= FLUSH_AT
        };
        if full {
            self.inner.flush();
        }
    }
}

impl Inner {
    fn flush(&self) {
        let mut out = lock(&self.out);
        let batch = {
            let mut pending = lock(&self.pending);
            if pending.is_empty() {
                return;
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(FLUSH_AT))
        };
        // An access log that cannot be written (a closed stderr) must not stop the router.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
    }
}

fn flush_loop(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        match inner.upgrade() {
            Some(inner) => inner.flush(),
            None => return,
        }
    }
}

/// Appends `t` as RFC 3339 in UTC with microseconds, as `tracing-subscriber` writes it
/// (`2026-12-04T02:33:25.123456Z`). The part down to the second is made once per second.
pub(crate) fn push_rfc3339(buf: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let prefix = SECOND.with(|cached| {
        let (at, prefix) = cached.get();
        if at == secs {
            return prefix;
        }
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let mut prefix = [0u8; 19];
        let text = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        );
        if text.len() == prefix.len() {
            prefix.copy_from_slice(text.as_bytes());
            cached.set((secs, prefix));
        }
        prefix
    });
    buf.extend_from_slice(&prefix);
    buf.push(b'.');
    push_padded(buf, u64::from(since.subsec_micros()), 6);
    buf.push(b'Z');
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
pub(crate) fn push_padded(buf: &mut Vec<u8>, n: u64, width: u32) {
    let mut div = 10u64.pow(width.saturating_sub(1));
    while div > 0 {
        buf.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// Appends `s` quoted as `{:?}` would, without the formatting machinery when nothing in it
/// needs escaping.
pub(crate) fn push_quoted(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps_as_rfc3339() {
        for (secs, micros, want) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.000005Z"),
            (1_796_351_605, 123_456, "2026-12-04T02:33:25.123456Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            // Twice: the second one comes from the per-second cache.
            for _ in 0..2 {
                let mut buf = Vec::new();
                push_rfc3339(&mut buf, t);
                assert_eq!(String::from_utf8(buf).unwrap(), want, "{secs}");
            }
        }
    }

    #[test]
    fn formats_numbers_and_quotes_like_fmt() {
        let mut buf = Vec::new();
        for n in [0, 7, 10, 1234, u64::MAX] {
            buf.clear();
            push_u64(&mut buf, n);
            assert_eq!(String::from_utf8(buf.clone()).unwrap(), n.to_string());
        }
        for (n, want) in [(5, "005"), (120, "120"), (4321, "321")] {
            buf.clear();
            push_padded(&mut buf, n, 3);
            assert_eq!(String::from_utf8(buf.clone()).unwrap(), want);
        }
        for s in ["abc-1", "", "a \"b\"", "back\\slash", "tab\t", "é"] {
            buf.clear();
            push_quoted(&mut buf, s);
            assert_eq!(
                String::from_utf8(buf.clone()).unwrap(),
                format!("{s:?}"),
                "{s:?}"
            );
        }
    }

    #[test]
    fn lines_go_out_in_order_when_flushed_or_dropped() {
        let sink: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = LogWriter::start(&AccessLog::Writer(sink.clone())).unwrap();
        writer.line(|b| b.extend_from_slice(b"one"));
        writer.line(|b| b.extend_from_slice(b"two"));
        writer.inner.flush();
        assert_eq!(&*sink.lock().unwrap(), b"one\ntwo\n");
        writer.line(|b| b.extend_from_slice(b"three"));
        drop(writer);
        assert_eq!(&*sink.lock().unwrap(), b"one\ntwo\nthree\n");
        assert!(LogWriter::start(&AccessLog::Off).is_none());
    }

    #[test]
    fn a_full_buffer_is_written_by_the_request_that_filled_it() {
        let sink: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = LogWriter::start(&AccessLog::Writer(sink.clone())).unwrap();
        let long = vec![b'x'; FLUSH_AT];
        writer.line(|b| b.extend_from_slice(&long));
        assert!(sink.lock().unwrap().len() > FLUSH_AT);
        assert!(lock(&writer.inner.pending).is_empty());
    }
}
