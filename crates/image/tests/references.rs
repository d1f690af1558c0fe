//! Property tests of image references (pod specs, `kumo image pull`, archives' names): any text
//! parses or is an error naming it, never a panic; a canonical name parses back to itself.

use kumo_image::ImageRef;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config::with_cases(512)
}

fn text_of(alphabet: &'static str, min: usize, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), min..=max).prop_map(String::from_iter)
}

/// Text from references' own punctuation and words, and anything.
fn reference_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        4 => prop::sample::select(vec![
            "busybox", "library", "docker.io", "localhost", "127.0.0.1", ":5000", "[::1]", "/",
            ":", "@", "sha256:", "latest", "1.36", "a", "A", "-", "_", "__", ".", "..", "::",
            "@@", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", " ", "é",
        ])
        .prop_map(str::to_string),
        1 => prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
    ];
    prop::collection::vec(part, 0..10).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_parses_or_is_an_error_naming_it(text in reference_text()) {
        match ImageRef::parse(&text) {
            Ok(r) => {
                let name = r.name();
                let again = ImageRef::parse(&name)
                    .unwrap_or_else(|e| panic!("{text:?} -> {name:?} does not parse: {e}"));
                prop_assert_eq!(again.name(), name.clone(), "{:?}", text);
                prop_assert!(!r.registry().is_empty() && !r.repository().is_empty());
                let _ = (r.tag(), r.digest(), r.is_latest(), r.to_string());
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("invalid image reference"), "{message}");
                prop_assert!(message.contains(&format!("{text:?}")), "{message}");
            }
        }
    }

    /// `[registry/]path[:tag][@digest]` built from valid parts: every part comes back.
    #[test]
    fn built_references_keep_their_parts(
        registry in prop::option::of(prop_oneof![
            Just("localhost:5000".to_string()),
            Just("127.0.0.1:5000".to_string()),
            text_of("abcxyz", 1, 6).prop_map(|h| format!("{h}.example")),
        ]),
        path in prop::collection::vec(text_of("abcxyz019", 1, 8), 1..4),
        tag in prop::option::of(text_of("abcXYZ019_.-", 1, 20).prop_filter("starts with a word character", |t| !t.starts_with(['.', '-']))),
        digest in prop::option::of(text_of("0123456789abcdef", 64, 64)),
    ) {
        let mut text = path.join("/");
        if let Some(r) = &registry {
            text = format!("{r}/{text}");
        }
        if let Some(t) = &tag {
            text.push(':');
            text.push_str(t);
        }
        if let Some(d) = &digest {
            text.push_str("@sha256:");
            text.push_str(d);
        }
        let r = ImageRef::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let want_registry = registry.as_deref().unwrap_or("docker.io");
        prop_assert_eq!(r.registry(), want_registry);
        let want_repo = if registry.is_none() && path.len() == 1 {
            format!("library/{}", path[0])
        } else {
            path.join("/")
        };
        prop_assert_eq!(r.repository(), want_repo.as_str());
        prop_assert_eq!(r.digest().map(str::to_string), digest.map(|d| format!("sha256:{d}")));
        match (&tag, r.digest()) {
            (Some(t), _) => prop_assert_eq!(r.tag(), Some(t.as_str())),
            (None, Some(_)) => prop_assert_eq!(r.tag(), None),
            (None, None) => prop_assert_eq!(r.tag(), Some("latest")),
        }
        let again = ImageRef::parse(&r.name()).unwrap();
        prop_assert_eq!(again.name(), r.name());
        prop_assert_eq!(again.is_latest(), r.is_latest());
    }
}
