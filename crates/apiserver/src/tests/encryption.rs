//! Secrets at rest: encrypted bytes in the store, plain objects on every read path (get, list,
//! watch, update, patch, delete), and one unreadable Secret never breaking the others.

use super::watch::Lines;
use super::*;
use kumo_store::Store;

const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const VALUE: &str = "hunter2-correct-horse";
/// base64 of [`VALUE`], as the API stores it in `data`.
const VALUE_B64: &str = "aHVudGVyMi1jb3JyZWN0LWhvcnNl";
const KEY1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY2: &str = "HxscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgEAAAE=";

fn config(keys: &[(&str, &str)]) -> Arc<crate::Transformer> {
    let keys: String = keys
        .iter()
        .map(|(n, s)| format!("      - {{name: {n}, secret: {s}}}\n"))
        .collect();
    let text = format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n{keys}  - identity: {{}}\n");
    Arc::new(crate::encryption::parse(&text).unwrap())
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"password": VALUE}})
}

fn key(name: &str) -> String {
    format!("/registry/core/secrets/default/{name}")
}

async fn raw(store: &MemStore, name: &str) -> Vec<u8> {
    store.get(&key(name)).await.unwrap().unwrap().value
}

/// Whether `stored` holds the secret's value in any readable form.
fn leaks(stored: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stored);
    text.contains(VALUE) || text.contains(VALUE_B64)
}

fn password(obj: &Value) -> &str {
    obj["data"]["password"].as_str().unwrap_or_default()
}

/// A merge patch that changes nothing.
async fn empty_patch(s: &Server) -> Value {
    s.check(
        req("PATCH", &format!("{SECRETS}/s"), Some(json!({}))),
        200,
        "",
    )
    .await
}

async fn start(store: &Arc<MemStore>, encryption: Arc<crate::Transformer>) -> Server {
    let dyn_store: Arc<dyn kumo_store::Store> = store.clone();
    Server::with_config(dyn_store, Duration::from_secs(5), encryption).await
}

#[tokio::test]
async fn every_read_path_decrypts_and_the_store_holds_ciphertext() {
    let store = Arc::new(MemStore::new());
    let s = start(&store, config(&[("key1", KEY1)])).await;
    let created = s.create(SECRETS, secret("s1")).await;
    assert_eq!(password(&created), VALUE_B64);
    let stored = raw(&store, "s1").await;
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(!leaks(&stored));
    // Other kinds are stored as they were.
    assert!(store
        .get("/registry/core/namespaces/default")
        .await
        .unwrap()
        .unwrap()
        .value
        .starts_with(b"{"));

    let got = s
        .check(req("GET", &format!("{SECRETS}/s1"), None), 200, "")
        .await;
    assert_eq!(password(&got), VALUE_B64);
    let list = s.check(req("GET", SECRETS, None), 200, "").await;
    assert_eq!(password(&list["items"][0]), VALUE_B64);

    // A watch's initial list and its live events.
    let mut w = Lines::open(&s, &format!("{SECRETS}?watch=true")).await;
    let added = w.expect("ADDED", "s1").await;
    assert_eq!(password(&added["object"]), VALUE_B64);
    let patched = s
        .check(
            req(
                "PATCH",
                &format!("{SECRETS}/s1"),
                Some(json!({"metadata": {"labels": {"a": "b"}}})),
            ),
            200,
            "",
        )
        .await;
    assert_eq!(password(&patched), VALUE_B64);
    let modified = w.expect("MODIFIED", "s1").await;
    assert_eq!(password(&modified["object"]), VALUE_B64);
    assert_eq!(modified["object"]["metadata"]["labels"]["a"], "b");
    assert!(!leaks(&raw(&store, "s1").await));

    // A full update, and a replay from a revision.
    let mut put = got.clone();
    put["metadata"]["resourceVersion"] = json!(rv(&patched).to_string());
    put["data"]["other"] = json!("eA==");
    let updated = s
        .check(req("PUT", &format!("{SECRETS}/s1"), Some(put)), 200, "")
        .await;
    assert_eq!(password(&updated), VALUE_B64);
    let mut replay = Lines::open(
        &s,
        &format!("{SECRETS}?watch=true&resourceVersion={}", rv(&created)),
    )
    .await;
    replay.expect("MODIFIED", "s1").await;
    let event = replay.expect("MODIFIED", "s1").await;
    assert_eq!(event["object"]["data"]["other"], "eA==");
    assert!(!leaks(&raw(&store, "s1").await));

    let deleted = s
        .check(req("DELETE", &format!("{SECRETS}/s1"), None), 200, "")
        .await;
    assert_eq!(password(&deleted), VALUE_B64);
    let gone = w.expect("MODIFIED", "s1").await;
    assert_eq!(gone["object"]["data"]["other"], "eA==");
    let gone = w.expect("DELETED", "s1").await;
    assert_eq!(password(&gone["object"]), VALUE_B64);
    s.stop().await;
}

#[tokio::test]
async fn an_unreadable_secret_is_an_error_for_itself_only() {
    let store = Arc::new(MemStore::new());
    let old = start(&store, config(&[("key1", KEY1)])).await;
    old.create(SECRETS, secret("lost")).await;
    old.stop().await;
    // key1 is gone from the config: "lost" cannot be read, "kept" (written now) can.
    let s = start(&store, config(&[("key2", KEY2)])).await;
    s.create(SECRETS, secret("kept")).await;
    s.check(
        req("GET", &format!("{SECRETS}/lost"), None),
        500,
        "stored object \\\"/registry/core/secrets/default/lost\\\" cannot be read: the value is encrypted with key \\\"key1\\\", which the encryption config does not list",
    )
    .await;
    let list = s.check(req("GET", SECRETS, None), 200, "").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    let mut w = Lines::open(&s, &format!("{SECRETS}?watch=true")).await;
    w.expect("ADDED", "kept").await;
    // A tampered value written behind the API's back: skipped, and the watch goes on.
    let mut bad = raw(&store, "kept").await;
    *bad.last_mut().unwrap() ^= 1;
    store.update(&key("kept"), bad, None).await.unwrap();
    s.create(SECRETS, secret("after")).await;
    w.expect("ADDED", "after").await;
    s.check(
        req("GET", &format!("{SECRETS}/kept"), None),
        500,
        "does not decrypt with key \\\"key2\\\"",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn plain_and_old_key_secrets_are_rewritten_by_a_no_op_write() {
    let store = Arc::new(MemStore::new());
    // Written before encryption was on.
    let plain = start(&store, Arc::new(crate::Transformer::identity())).await;
    plain.create(SECRETS, secret("s")).await;
    plain.stop().await;
    assert!(leaks(&raw(&store, "s").await));

    let s = start(&store, config(&[("key1", KEY1)])).await;
    let got = s
        .check(req("GET", &format!("{SECRETS}/s"), None), 200, "")
        .await;
    assert_eq!(password(&got), VALUE_B64);
    // An empty patch changes nothing but the stored bytes: now encrypted with key1.
    let first = empty_patch(&s).await;
    assert!(rv(&first) > rv(&got));
    let stored = raw(&store, "s").await;
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(!leaks(&stored));
    // Current bytes: a no-op write stays a no-op.
    assert_eq!(rv(&empty_patch(&s).await), rv(&first));
    s.stop().await;

    // Rotation: key2 first, key1 still listed; the same no-op write moves it to key2.
    let s = start(&store, config(&[("key2", KEY2), ("key1", KEY1)])).await;
    let moved = empty_patch(&s).await;
    assert!(rv(&moved) > rv(&first));
    assert!(raw(&store, "s")
        .await
        .starts_with(b"k8s:enc:aesgcm:v1:key2:"));
    s.stop().await;
    // key1 removed: still readable.
    let s = start(&store, config(&[("key2", KEY2)])).await;
    let got = s
        .check(req("GET", &format!("{SECRETS}/s"), None), 200, "")
        .await;
    assert_eq!(password(&got), VALUE_B64);
    s.stop().await;
}
