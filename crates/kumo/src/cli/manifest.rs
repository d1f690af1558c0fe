//! Manifests: YAML (multi-document) and JSON files, directories or stdin, checked before use.

use kumo_api::{kind_by_type, KindInfo};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// One object read from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `app.yaml: document 2`, for messages.
    pub origin: String,
    pub kind: &'static KindInfo,
    /// The namespace it goes to; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
    /// The object as written, with the namespace filled in for namespaced kinds.
    pub object: Value,
}

/// Reads every manifest named by `-f` arguments; any problem anywhere fails the whole load, so
/// that nothing changes when one file is wrong. Errors are one line each.
pub fn load(paths: &[String], namespace: Option<&str>) -> Result<Vec<Manifest>, Vec<String>> {
    let mut errors = Vec::new();
    let mut manifests = Vec::new();
    for (label, text) in read_sources(paths, &mut errors) {
        let (docs, error) = parse_documents(&label, &text);
        for (index, doc) in docs {
            for (origin, value) in expand_list(&format!("{label}: document {index}"), doc) {
                match to_manifest(&origin, value, namespace) {
                    Ok(m) => manifests.push(m),
                    Err(e) => errors.push(e),
                }
            }
        }
        errors.extend(error);
    }
    if manifests.is_empty() && errors.is_empty() {
        errors.push(format!(
            "no objects found in {}: a manifest needs apiVersion, kind and metadata.name",
            paths.join(", ")
        ));
    }
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// The texts of the files named: `-` is stdin, a directory gives its .yaml/.yml/.json files sorted.
fn read_sources(paths: &[String], errors: &mut Vec<String>) -> Vec<(String, String)> {
    let mut sources = Vec::new();
    for path in paths {
        if path == "-" {
            match std::io::read_to_string(std::io::stdin()) {
                Ok(text) => sources.push(("stdin".to_string(), text)),
                Err(e) => errors.push(format!("cannot read stdin: {e}")),
            }
            continue;
        }
        let p = Path::new(path);
        if p.is_dir() {
            let entries = match std::fs::read_dir(p) {
                Ok(entries) => entries,
                Err(e) => {
                    errors.push(format!("cannot read directory {path}: {e}"));
                    continue;
                }
            };
            let mut files: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && matches!(extension(f).as_str(), "yaml" | "yml" | "json"))
                .collect();
            files.sort();
            if files.is_empty() {
                errors.push(format!(
                    "directory {path} has no .yaml, .yml or .json files"
                ));
            }
            for f in files {
                read_file(&f, &mut sources, errors);
            }
        } else {
            read_file(p, &mut sources, errors);
        }
    }
    sources
}

fn extension(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn read_file(p: &Path, sources: &mut Vec<(String, String)>, errors: &mut Vec<String>) {
    match std::fs::read_to_string(p) {
        Ok(text) => sources.push((p.display().to_string(), text)),
        Err(e) => errors.push(format!("cannot read {}: {}", p.display(), io_reason(&e))),
    }
}

/// `No such file or directory`, without the `(os error 2)`.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The non-empty documents of a text, numbered from 1 as they appear, up to the first that does
/// not parse (whose error comes second). JSON (a text starting with `{`) may hold several
/// concatenated objects; YAML documents are separated by `---`.
pub fn parse_documents(label: &str, text: &str) -> (Vec<(usize, Value)>, Option<String>) {
    if text.trim_start().starts_with('{') {
        let mut docs = Vec::new();
        for (i, doc) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            match doc {
                Ok(v) => docs.push((i + 1, v)),
                Err(e) => {
                    let error = format!(
                        "{label}: document {}: invalid JSON at line {}, column {}: {}",
                        i + 1,
                        e.line(),
                        e.column(),
                        strip_location(&e.to_string())
                    );
                    return (docs, Some(error));
                }
            }
        }
        return (docs, None);
    }
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push((i + 1, v)),
            // A failed document ends the stream: the parser cannot resume after a syntax error.
            Err(e) => {
                let at = match e.location() {
                    Some(l) => format!(" at line {}, column {}", l.line(), l.column()),
                    None => String::new(),
                };
                let error = format!(
                    "{label}: document {}: invalid YAML{at}: {}",
                    i + 1,
                    strip_location(&e.to_string())
                );
                return (docs, Some(error));
            }
        }
    }
    (docs, None)
}

/// Drops the ` at line L column C` that serde errors append, since messages name it first.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A `kind: List` stands for its items; anything else for itself.
fn expand_list(origin: &str, doc: Value) -> Vec<(String, Value)> {
    let is_list = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && doc.get("items").is_some_and(Value::is_array);
    if !is_list {
        return vec![(origin.to_string(), doc)];
    }
    match doc {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{origin}: item {}", i + 1), v))
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Checks what the CLI needs to route an object (its kind, name and namespace); the server
/// checks the fields.
pub fn to_manifest(
    origin: &str,
    mut object: Value,
    namespace_flag: Option<&str>,
) -> Result<Manifest, String> {
    let Value::Object(map) = &mut object else {
        return Err(format!(
            "{origin}: not an object: a manifest is a mapping with apiVersion, kind and metadata"
        ));
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind_name = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if api_version.is_empty() {
        return Err(format!(
            "{origin}: apiVersion is missing: set it, e.g. apiVersion: v1"
        ));
    }
    if kind_name.is_empty() {
        return Err(format!("{origin}: kind is missing: set it, e.g. kind: Pod"));
    }
    let kind = kind_by_type(&api_version, &kind_name).ok_or_else(|| {
        let known: Vec<String> = kumo_api::kinds()
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k.kind))
            .collect();
        format!(
            "{origin}: unknown kind {kind_name:?} (apiVersion {api_version:?}): known kinds are {}",
            known.join(", ")
        )
    })?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Value::Object(meta) = metadata else {
        return Err(format!("{origin}: metadata must be a mapping"));
    };
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(format!(
            "{origin}: metadata.name is missing: every object applied needs a name"
        ));
    }
    super::check_name(&name).map_err(|e| format!("{origin}: metadata.name: {e}"))?;
    let own_ns = match meta.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(format!(
                "{origin}: metadata.namespace must be a non-empty string"
            ))
        }
    };
    let namespace = if kind.namespaced {
        let ns = match (own_ns, namespace_flag) {
            (Some(own), Some(flag)) if own != flag => {
                return Err(format!(
                    "{origin}: the namespace of the object ({own:?}) does not match the namespace given with -n ({flag:?})"
                ))
            }
            (Some(own), _) => own,
            (None, Some(flag)) => flag.to_string(),
            (None, None) => kumo_api::DEFAULT_NAMESPACE.to_string(),
        };
        super::check_name(&ns).map_err(|e| format!("{origin}: metadata.namespace: {e}"))?;
        meta.insert("namespace".into(), Value::String(ns.clone()));
        Some(ns)
    } else {
        None
    };
    // The server's own admission code, run here first, so that one invalid document keeps
    // every document of the apply from being sent.
    if let Err(errors) = (kind.admit)(object.clone()) {
        let status = kumo_api::Status::invalid(kind.kind, &name, &errors);
        return Err(format!("{origin}: {}", status.message));
    }
    Ok(Manifest {
        origin: origin.to_string(),
        kind,
        namespace,
        name,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `text` as file `f.yaml` and describes the result in one line per object or error.
    fn check(text: &str, ns: Option<&str>, expected: &[&str]) {
        let (docs, error) = parse_documents("f.yaml", text);
        let mut got: Vec<String> = docs
            .into_iter()
            .flat_map(|(i, doc)| expand_list(&format!("f.yaml: document {i}"), doc))
            .map(|(origin, v)| match to_manifest(&origin, v, ns) {
                Ok(m) => format!(
                    "{}: {}/{} in {}",
                    m.origin,
                    m.kind.kind,
                    m.name,
                    m.namespace.as_deref().unwrap_or("-")
                ),
                Err(e) => e,
            })
            .collect();
        got.extend(error);
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn multi_document_yaml() {
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x}]}\n---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\n",
            None,
            &["f.yaml: document 1: Pod/a in default", "f.yaml: document 3: Namespace/team in -"],
        );
    }

    #[test]
    fn namespaces_from_flag_and_object() {
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x}]}\n",
            Some("dev"),
            &["f.yaml: document 1: Pod/a in dev"],
        );
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: prod}\nspec: {containers: [{name: c, image: x}]}\n",
            None,
            &["f.yaml: document 1: Pod/a in prod"],
        );
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: prod}\nspec: {containers: [{name: c, image: x}]}\n",
            Some("dev"),
            &["f.yaml: document 1: the namespace of the object (\"prod\") does not match the namespace given with -n (\"dev\")"],
        );
    }

    #[test]
    fn json_documents_and_lists() {
        check(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"x"}]}}
               {"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}]}"#,
            None,
            &[
                "f.yaml: document 1: Pod/a in default",
                "f.yaml: document 2: item 1: Node/n1 in -",
            ],
        );
        check(
            "{\"apiVersion\": \"v1\",\n \"kind\": }",
            None,
            &["f.yaml: document 1: invalid JSON at line 2, column 10: expected value"],
        );
    }

    #[test]
    fn invalid_yaml_names_document_and_line() {
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n   bad: [\n",
            None,
            &[
                "f.yaml: document 1: Pod/a in default",
                "f.yaml: document 2: invalid YAML at line 10, column 7: mapping values are not allowed in this context",
            ],
        );
    }

    #[test]
    fn routing_fields_are_checked() {
        // Every served kind is named, in registry order.
        let known: Vec<String> = kumo_api::kinds()
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k.kind))
            .collect();
        assert!(known.starts_with(&["v1 Namespace".into(), "v1 Node".into(), "v1 Pod".into()]));
        let unknown = format!(
            "f.yaml: document 2: unknown kind \"Foo\" (apiVersion \"v1\"): known kinds are {}",
            known.join(", ")
        );
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Foo\nmetadata: {name: b}\n",
            None,
            &["f.yaml: document 1: Pod/a in default", &unknown],
        );
        check(
            "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x}]}\n",
            None,
            &["f.yaml: document 1: apiVersion is missing: set it, e.g. apiVersion: v1"],
        );
        check(
            "apiVersion: v1\nmetadata: {name: a}\n",
            None,
            &["f.yaml: document 1: kind is missing: set it, e.g. kind: Pod"],
        );
        check(
            "apiVersion: v1\nkind: Pod\nspec: {}\n",
            None,
            &["f.yaml: document 1: metadata.name is missing: every object applied needs a name"],
        );
        check("- a\n- b\n", None, &["f.yaml: document 1: not an object: a manifest is a mapping with apiVersion, kind and metadata"]);
        check("just text\n", None, &["f.yaml: document 1: not an object: a manifest is a mapping with apiVersion, kind and metadata"]);
    }

    #[test]
    fn empty_input_has_no_documents() {
        check("", None, &[]);
        check("# nothing\n---\n", None, &[]);
    }

    #[test]
    fn invalid_fields_fail_the_load_with_the_servers_message() {
        check(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x, resources: {limits: {cpu: lots}}}]}\n",
            None,
            &["f.yaml: document 1: Pod \"a\" is invalid: spec.containers[0].resources.limits.cpu: invalid quantity \"lots\""],
        );
    }

    #[test]
    fn directories_load_sorted_and_bad_files_fail_the_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: x}]}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"x"}]}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let dir_arg = dir.path().display().to_string();
        let names: Vec<String> = load(std::slice::from_ref(&dir_arg), None)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["a", "b"]);

        let missing = format!("{dir_arg}/missing.yaml");
        let errors = load(&[dir_arg.clone(), missing.clone()], None).unwrap_err();
        assert_eq!(
            errors,
            [format!("cannot read {missing}: No such file or directory")]
        );
    }
}
