//! `MemStore`: the in-memory fake, with exactly the semantics of the durable backends.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::op::{self, Write};
use crate::watch::{WatchHub, WatchWindow};
use crate::{EventKind, KeyValue, Revision, Store, StoreError, WatchStream};

/// A store that lives and dies with the process; for tests and throwaway clusters.
#[derive(Debug)]
pub struct MemStore {
    state: Mutex<State>,
    hub: WatchHub,
}

#[derive(Debug, Default)]
struct State {
    kv: BTreeMap<String, KeyValue>,
    revision: Revision,
}

impl MemStore {
    /// An empty store keeping the default [`WatchWindow`] for watchers.
    pub fn new() -> Self {
        Self::with_window(WatchWindow::default())
    }

    /// An empty store keeping the history `window` allows for watchers (a number alone bounds
    /// the events and keeps the default byte bound).
    pub fn with_window(window: impl Into<WatchWindow>) -> Self {
        MemStore {
            state: Mutex::new(State::default()),
            hub: WatchHub::new(window.into()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, key: &str, write: Write) -> Result<KeyValue, StoreError> {
        let mut state = self.state();
        let revision = state.revision + 1;
        let event = op::apply(key, write, state.kv.get(key), revision)?;
        match event.kind {
            EventKind::Put => state.kv.insert(key.to_owned(), event.kv.clone()),
            EventKind::Delete => state.kv.remove(key),
        };
        state.revision = revision;
        let kv = event.kv.clone();
        self.hub.publish(event);
        Ok(kv)
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.state().kv.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let state = self.state();
        let items = state
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((items, state.revision))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(key, Write::Create(value))
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.write(key, Write::Update { value, expected })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(key, Write::Delete { expected })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.hub.watch(prefix, after)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.state().revision)
    }
}
