//! Each structured value's parse and format, as data: what a text reads as (`None`: not one of
//! its kind), and that formatting what was read gives the text back.

use super::*;
use std::fmt::Debug;

/// `parse(text) == expected`, and when it parses, `format` of it gives `text` back.
fn check<T: Debug + PartialEq>(
    parse: impl Fn(&str) -> Option<T>,
    format: impl Fn(&T) -> String,
    text: &str,
    expected: Option<T>,
) {
    let got = parse(text);
    assert_eq!(got, expected, "parse({text:?})");
    if let Some(v) = got {
        assert_eq!(format(&v), text, "format(parse({text:?}))");
    }
}

#[test]
fn gpu_devices() {
    let rec = |parts: &[(&str, &[u32])]| -> GpuDevices {
        parts
            .iter()
            .map(|(c, ids)| (c.to_string(), ids.to_vec()))
            .collect()
    };
    let cases: &[(&str, Option<GpuDevices>)] = &[
        (
            "main=0,1;side=2",
            Some(rec(&[("main", &[0, 1]), ("side", &[2])])),
        ),
        ("main=3", Some(rec(&[("main", &[3])]))),
        ("main=", Some(rec(&[("main", &[])]))),
        ("", Some(GpuDevices::new())),
        ("main", None),
        ("main=a", None),
        ("main=-1", None),
        ("main=0;side", None),
    ];
    for (text, expected) in cases {
        check(
            parse_gpu_devices,
            format_gpu_devices,
            text,
            expected.clone(),
        );
    }
    // Empty parts and empty ids are skipped; the record is written back in container order.
    let loose = parse_gpu_devices("side=2;;main=1,,0").unwrap();
    assert_eq!(format_gpu_devices(&loose), "main=1,0;side=2");
}

#[test]
fn times() {
    let t = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
    let cases = [
        ("2030-01-01T00:00:00Z", Some(t(1_893_456_000))),
        ("1970-01-01T00:00:10Z", Some(t(10))),
        ("2030-01-01", None),
        ("soon", None),
        ("", None),
    ];
    for (text, expected) in cases {
        check(parse_time, |v| format_time(*v), text, expected);
    }
    // Another offset reads as the same instant, written back in UTC.
    let other = parse_time("2030-01-01T09:00:00+09:00").unwrap();
    assert_eq!(format_time(other), "2030-01-01T00:00:00Z");
}

#[test]
fn ports() {
    let cases = [
        ("4321", Some(4321)),
        ("65535", Some(65535)),
        ("65536", None),
        ("-1", None),
        ("auto", None),
        ("", None),
    ];
    for (text, expected) in cases {
        check(parse_port, |v| format_port(*v), text, expected);
    }
}

#[test]
fn numbers() {
    for (text, expected) in [("3", Some(3)), ("-1", Some(-1)), ("x", None), ("", None)] {
        check(parse_release, |v| format_release(*v), text, expected);
        check(
            parse_attempt,
            |v| format_attempt(*v),
            text,
            expected.map(|v| v as i32),
        );
        check(parse_seconds, |v| format_seconds(*v), text, expected);
    }
    for (text, expected) in [
        ("0", Some(0)),
        ("4", Some(4)),
        ("-1", None),
        ("x", None),
        ("", None),
    ] {
        check(parse_rank, |v| format_rank(*v), text, expected);
        check(parse_gang_size, |v| format_gang_size(*v), text, expected);
    }
}
