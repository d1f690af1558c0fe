//! The write rules every backend shares: what a create, update or delete does to one key.

use crate::{Event, EventKind, KeyValue, Revision, StoreError};

/// One write to one key, as the `Store` trait receives it.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Create(Vec<u8>),
    Update {
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        expected: Option<Revision>,
    },
}

/// The event that `write` to `key` commits at `revision`, given the key's current value, or why
/// it is refused. Pure: the backend applies the event (store `kv` on `Put`, remove on `Delete`).
pub(crate) fn apply(
    key: &str,
    write: Write,
    current: Option<&KeyValue>,
    revision: Revision,
) -> Result<Event, StoreError> {
    let check = |expected: Option<Revision>| -> Result<&KeyValue, StoreError> {
        let kv = current.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
        match expected {
            Some(expected) if expected != kv.mod_revision => Err(StoreError::Conflict {
                key: key.to_owned(),
                current: kv.mod_revision,
            }),
            _ => Ok(kv),
        }
    };
    match write {
        Write::Create(value) => match current {
            Some(_) => Err(StoreError::AlreadyExists(key.to_owned())),
            None => Ok(Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                },
                created: true,
            }),
        },
        Write::Update { value, expected } => {
            let kv = check(expected)?;
            Ok(Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision: kv.create_revision,
                    mod_revision: revision,
                },
                created: false,
            })
        }
        Write::Delete { expected } => {
            let kv = check(expected)?;
            Ok(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: revision,
                    ..kv.clone()
                },
                created: false,
            })
        }
    }
}
