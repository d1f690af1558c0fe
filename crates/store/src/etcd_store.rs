//! `EtcdStore`: the store in an etcd cluster, so several API servers share one global order.
//!
//! Keys are etcd keys as they are; a revision is etcd's revision. A create is a transaction on
//! "key absent" (create_revision == 0), a conditional update or delete a transaction on the
//! key's mod_revision, so conflicts are decided by etcd, not here. Reads go to etcd
//! (linearizable). Watches are served from a local [`WatchHub`] fed by one etcd watch on the
//! whole key space, as kube-apiserver's watch cache is: every watcher of this server shares one
//! etcd stream, and a watch waits until that stream has caught up with every revision this
//! store has seen, so a list followed by a watch from its revision misses nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch as signal;

use crate::watch::{WatchHub, WatchWindow};
use crate::{Event, EventKind, KeyValue, Revision, Store, StoreError, WatchStream};

/// How long one etcd request may take before the store answers `Backend`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new watch waits for the shared etcd stream to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write waits for the watch feed to show it before it is acknowledged anyway.
const WRITE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to re-open the etcd watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The pause before a request that reached no member is sent again (to another).
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Where etcd is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// etcd's user and password (etcd's own auth).
    pub user: Option<(String, String)>,
    /// PEM of the CA that signed etcd's serving certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of a client certificate and its key, for etcd's `--client-cert-auth`.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// How long the first contact may take before `connect` gives up.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// Plain endpoints, no auth, a 5 s first contact.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            user: None,
            ca_pem: None,
            identity_pem: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The etcd backend. Cheap to share behind an `Arc`; dropping it stops its watch feed once the
/// feed has delivered every revision this store saw, then ends the streams.
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    hub: Arc<WatchHub>,
    /// Subtracted from etcd's revisions (0 in service; tests count from an empty etcd).
    base: Revision,
    /// The highest etcd revision any response has shown this store.
    seen: Arc<AtomicU64>,
    /// Set on drop to the revision the feed must reach before it stops.
    closing: signal::Sender<Option<Revision>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn backend(endpoints: &str, e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    // etcd refuses a request over its `--max-request-bytes` ("etcdserver: request is too
    // large"), and its gRPC server one over its receive limit: the write is at fault.
    if text.contains("request is too large") || text.contains("received message larger than max") {
        return StoreError::TooLarge(format!(
            "the object is too large for etcd (its --max-request-bytes; 1.5 MiB by default): {text}"
        ));
    }
    StoreError::Backend(format!("etcd at {endpoints}: {text}"))
}

/// Whether a failed request never reached etcd: the connection to the member the channel
/// picked could not be made (etcd-client's error has no `source`: its text says).
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}

fn to_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn to_u64(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

impl EtcdStore {
    /// Connects to etcd and checks it answers within `config.connect_timeout`; the error names
    /// the endpoints. Watches keep `window` of history for watchers to resume from.
    pub async fn connect(
        config: &EtcdConfig,
        window: impl Into<WatchWindow>,
    ) -> Result<Self, StoreError> {
        Self::connect_at_base(config, window.into(), 0).await
    }

    /// As [`connect`](Self::connect), reporting revisions less `base` (tests count the contract's
    /// revisions from an empty etcd, whose revision is already 1).
    pub(crate) async fn connect_at_base(
        config: &EtcdConfig,
        window: WatchWindow,
        base: Revision,
    ) -> Result<Self, StoreError> {
        let endpoints = config.endpoints.join(",");
        if config.endpoints.is_empty() {
            return Err(StoreError::Backend("etcd: no endpoints given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &config.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if config.ca_pem.is_some() || config.identity_pem.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &config.identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        // The first contact (and, with a user, the token request) is bounded: an etcd that
        // does not answer is an error naming it, not a hang.
        let unreachable =
            |e: String| StoreError::Backend(format!("etcd at {endpoints} is unreachable: {e}"));
        let contact = async {
            let mut client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(|e| e.to_string())?;
            let header = client
                .get("\0", Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| e.to_string())?;
            let revision = header.header().map(|h| h.revision()).unwrap_or(0);
            Ok::<_, String>((client, to_u64(revision)))
        };
        let (client, revision) = tokio::time::timeout(config.connect_timeout, contact)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", config.connect_timeout)))?
            .map_err(unreachable)?;
        let start = revision.saturating_sub(base);
        let hub = Arc::new(WatchHub::restore(window, start, Vec::new()));
        let seen = Arc::new(AtomicU64::new(revision));
        let (closing, closed) = signal::channel(None);
        tokio::spawn(feed(
            client.clone(),
            endpoints.clone(),
            Arc::clone(&hub),
            base,
            revision,
            closed,
        ));
        Ok(EtcdStore {
            client,
            endpoints,
            hub,
            base,
            seen,
            closing,
        })
    }

    fn note(&self, header: Option<&etcd_client::ResponseHeader>) -> Revision {
        let revision = header.map(|h| to_u64(h.revision())).unwrap_or(0);
        self.seen.fetch_max(revision, Ordering::SeqCst);
        revision.saturating_sub(self.base)
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: kv
                .key_str()
                .map_err(|e| backend(&self.endpoints, e))?
                .to_owned(),
            value: kv.value().to_vec(),
            create_revision: to_u64(kv.create_revision()).saturating_sub(self.base),
            mod_revision: to_u64(kv.mod_revision()).saturating_sub(self.base),
        })
    }

    /// Runs a request made by `request`, within `REQUEST_TIMEOUT`. With several members, a
    /// request that never reached etcd (the channel picked a member that is down) is made
    /// again, writes included, so that the balanced channel picks another: one dead member of
    /// three fails nothing.
    async fn call<T, F>(&self, mut request: impl FnMut() -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let members = self.endpoints.split(',').count();
        let mut tries = 0;
        loop {
            tries += 1;
            match tokio::time::timeout_at(deadline, request()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) if members > 1 && tries < 3 * members && never_sent(&e) => {
                    tracing::debug!(error = %e, "etcd member unreachable, sending again");
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                Ok(Err(e)) => return Err(backend(&self.endpoints, e)),
                Err(_) => {
                    return Err(backend(
                        &self.endpoints,
                        format!("no answer within {REQUEST_TIMEOUT:?}"),
                    ))
                }
            }
        }
    }

    /// Runs `txn`: on success the revision it committed at and the first op's response, else
    /// the key's current value (the `or_else` branch is a get of `key`).
    async fn txn(
        &self,
        txn: Txn,
    ) -> Result<Result<(Revision, Option<TxnOpResponse>), Option<KeyValue>>, StoreError> {
        let response = self
            .call(|| {
                let (mut kv, txn) = (kv(&self.client), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        let revision = self.note(response.header());
        let first = response.op_responses().into_iter().next();
        if response.succeeded() {
            // As with the embedded stores, a write this server acknowledges is already in its
            // watches (its own informers see it before the client hears back). Bounded: the
            // write is committed either way, and a feed that is behind catches up by itself.
            let caught_up = tokio::time::timeout(WRITE_VISIBLE_TIMEOUT, self.hub.reached(revision));
            if caught_up.await.is_err() {
                tracing::debug!(
                    revision,
                    "acknowledging a write the watch feed has not shown yet"
                );
            }
            return Ok(Ok((revision, first)));
        }
        let current = match first {
            Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
                Some(kv) => Some(self.kv(kv)?),
                None => None,
            },
            _ => None,
        };
        Ok(Err(current))
    }

    /// Compacts etcd's history up to `revision` (in this store's numbering); watches from
    /// before it answer `Compacted` once the watch feed has to reopen.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let etcd_revision = to_i64(revision + self.base);
        self.call(|| {
            let mut kv = kv(&self.client);
            async move { kv.compact(etcd_revision, None).await }
        })
        .await?;
        Ok(())
    }

    /// Compacts every `interval` to the revision seen one interval earlier, as kube-apiserver
    /// does, so watches a little behind can still resume. Ends when the store is dropped.
    pub fn compact_periodically(self: &Arc<Self>, interval: Duration) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut previous: Option<Revision> = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(store) = store.upgrade() else { return };
                if let Some(revision) = previous.filter(|&r| r > 0) {
                    match store.compact(revision).await {
                        Ok(()) => tracing::info!(revision, "compacted etcd history"),
                        // Compacting twice to one revision is an error etcd reports; harmless.
                        Err(e) => tracing::warn!(revision, "etcd compaction: {e}"),
                    }
                }
                previous = store.current_revision().await.ok();
            }
        });
    }
}

/// The most bytes one answer of etcd may hold. The gRPC default (4 MiB) made a list of some
/// 3,600 pods fail with 503 (and with it every relist of all pods): kube-apiserver lifts it to
/// `math.MaxInt32` for the same reason. A request stays bounded by etcd's own
/// `--max-request-bytes`.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// A KV client whose answers may be as large as [`MAX_RESPONSE_BYTES`].
fn kv(client: &Client) -> etcd_client::KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        let target = self.seen.load(Ordering::SeqCst).saturating_sub(self.base);
        self.closing.send_replace(Some(target));
    }
}

/// Converts one etcd watch event; `None` for a key that is not UTF-8 (not kumo's).
fn event(base: Revision, event: &etcd_client::Event) -> Option<Event> {
    let kv = event.kv()?;
    let key = kv.key_str().ok()?.to_owned();
    let rev = |r: i64| to_u64(r).saturating_sub(base);
    match event.event_type() {
        EventType::Put => Some(Event {
            kind: EventKind::Put,
            created: kv.create_revision() == kv.mod_revision(),
            kv: KeyValue {
                key,
                value: kv.value().to_vec(),
                create_revision: rev(kv.create_revision()),
                mod_revision: rev(kv.mod_revision()),
            },
        }),
        EventType::Delete => {
            let prev = event.prev_kv();
            Some(Event {
                kind: EventKind::Delete,
                created: false,
                kv: KeyValue {
                    key,
                    value: prev.map(|p| p.value().to_vec()).unwrap_or_default(),
                    create_revision: prev.map(|p| rev(p.create_revision())).unwrap_or(0),
                    mod_revision: rev(kv.mod_revision()),
                },
            })
        }
    }
}

/// The store is gone and the hub holds every revision it had seen.
fn done(hub: &WatchHub, closing: &signal::Receiver<Option<Revision>>) -> bool {
    let target = *closing.borrow();
    target.is_some_and(|target| hub.current_revision() >= target)
}

/// Follows etcd from `after` into `hub`, reopening the watch when it breaks, until the store is
/// dropped and the hub holds every revision it had seen.
async fn feed(
    client: Client,
    endpoints: String,
    hub: Arc<WatchHub>,
    base: Revision,
    after: Revision,
    mut closing: signal::Receiver<Option<Revision>>,
) {
    let mut next = to_i64(after + 1);
    let mut backoff = Duration::from_millis(100);
    // The store's sender goes away right after it sets the target: read it, then stop asking.
    let mut open = true;
    loop {
        if done(&hub, &closing) || (closing.borrow().is_some() && backoff > Duration::from_secs(1))
        {
            // Dropped and caught up, or dropped while etcd keeps failing: nothing more to wait for.
            return;
        }
        let mut watch_client = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let options = WatchOptions::new()
            .with_all_keys()
            .with_prev_key()
            .with_start_revision(next);
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, watch_client.watch("\0", Some(options)));
        let mut stream = match opened.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!("etcd watch at {endpoints}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tracing::warn!("etcd watch at {endpoints}: no answer");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                changed = closing.changed(), if open => {
                    open = changed.is_ok();
                    if done(&hub, &closing) {
                        return;
                    }
                    continue;
                }
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("etcd watch at {endpoints} broke: {e}");
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            if response.canceled() {
                let compacted = response.compact_revision();
                if compacted > 0 {
                    // etcd no longer has what the hub needs next: every watcher relists.
                    tracing::warn!(compacted, "etcd compacted past this server's watch feed");
                    hub.reset(to_u64(compacted - 1).saturating_sub(base));
                    next = compacted;
                } else {
                    tracing::warn!(
                        "etcd cancelled the watch at {endpoints}: {}",
                        response.cancel_reason()
                    );
                }
                break;
            }
            for e in response.events() {
                let Some(etcd_revision) = e.kv().map(|kv| kv.mod_revision()) else {
                    continue;
                };
                let revision = to_u64(etcd_revision).saturating_sub(base);
                match event(base, e) {
                    Some(event) if revision > hub.current_revision() => hub.publish(event),
                    Some(_) => {}
                    // Not kumo's (a key that is not UTF-8): the revision still passed.
                    None => hub.advance(revision),
                }
                next = etcd_revision + 1;
            }
            if done(&hub, &closing) {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .call(|| {
                let mut kv = kv(&self.client);
                async move { kv.get(key, None).await }
            })
            .await?;
        self.note(response.header());
        response.kvs().first().map(|kv| self.kv(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        // etcd answers a range sorted by key, all at the revision in its header.
        let options = if prefix.is_empty() {
            GetOptions::new().with_all_keys()
        } else {
            GetOptions::new().with_prefix()
        };
        let key = if prefix.is_empty() { "\0" } else { prefix };
        let response = self
            .call(|| {
                let (mut kv, options) = (kv(&self.client), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await?;
        let revision = self.note(response.header());
        let items = response
            .kvs()
            .iter()
            .map(|kv| self.kv(kv))
            .collect::<Result<_, _>>()?;
        Ok((items, revision))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        match self.txn(txn).await? {
            Ok((revision, _)) => Ok(KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            }),
            Err(_) => Err(StoreError::AlreadyExists(key.to_owned())),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        let when = match expected {
            Some(expected) => {
                Compare::mod_revision(key, CompareOp::Equal, to_i64(expected + self.base))
            }
            None => Compare::create_revision(key, CompareOp::NotEqual, 0),
        };
        let txn = Txn::new()
            .when([when])
            .and_then([TxnOp::put(
                key,
                value.clone(),
                Some(etcd_client::PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        match self.txn(txn).await? {
            Ok((revision, Some(TxnOpResponse::Put(put)))) => {
                let prev = put.prev_key().map(|p| self.kv(p)).transpose()?;
                Ok(KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision: prev.map(|p| p.create_revision).unwrap_or(revision),
                    mod_revision: revision,
                })
            }
            Ok(_) => Err(backend(&self.endpoints, "a put answered no put response")),
            Err(None) => Err(StoreError::NotFound(key.to_owned())),
            Err(Some(current)) => Err(StoreError::Conflict {
                key: key.to_owned(),
                current: current.mod_revision,
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let when = match expected {
            Some(expected) => {
                Compare::mod_revision(key, CompareOp::Equal, to_i64(expected + self.base))
            }
            None => Compare::create_revision(key, CompareOp::NotEqual, 0),
        };
        let txn = Txn::new()
            .when([when])
            .and_then([TxnOp::delete(
                key,
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        match self.txn(txn).await? {
            Ok((revision, Some(TxnOpResponse::Delete(delete)))) => {
                let prev = delete
                    .prev_kvs()
                    .first()
                    .map(|p| self.kv(p))
                    .transpose()?
                    .ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
                Ok(KeyValue {
                    mod_revision: revision,
                    ..prev
                })
            }
            Ok(_) => Err(backend(
                &self.endpoints,
                "a delete answered no delete response",
            )),
            Err(None) => Err(StoreError::NotFound(key.to_owned())),
            Err(Some(current)) => Err(StoreError::Conflict {
                key: key.to_owned(),
                current: current.mod_revision,
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Every revision a caller may have read here must be in the hub before the watch
        // starts, or it would wait past an event it should replay.
        let target = self.seen.load(Ordering::SeqCst).saturating_sub(self.base);
        if tokio::time::timeout(CATCH_UP_TIMEOUT, self.hub.reached(target))
            .await
            .is_err()
        {
            return Err(backend(
                &self.endpoints,
                format!("the watch feed is behind revision {target}"),
            ));
        }
        self.hub.watch(prefix, after)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let response = self
            .call(|| {
                let mut kv = kv(&self.client);
                async move {
                    kv.get("\0", Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(self.note(response.header()))
    }
}
