//! Keyed state storage shared by the stateful operators: a slab of per-key states addressed
//! by a dense slot number (so timers hold a `u32`, not a key), and a timer index ordered by
//! firing time.

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::{StreamError, Timestamp};

/// Per-key state that can be cleared and reused when its key goes away (keeps capacity, so
/// key churn does not allocate).
pub(crate) trait SlotState: Default {
    /// Empties the state, keeping allocated capacity.
    fn reset(&mut self);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Slot<K, S> {
    pub key: Option<K>,
    pub state: S,
}

/// Keys mapped to dense slots.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, S: Serialize",
    deserialize = "K: Deserialize<'de>, S: Deserialize<'de>"
))]
pub(crate) struct KeySlab<K: Eq + Hash, S> {
    #[serde(skip)]
    index: FxHashMap<K, u32>,
    slots: Vec<Slot<K, S>>,
    free: Vec<u32>,
}

impl<K: Eq + Hash, S> Default for KeySlab<K, S> {
    fn default() -> Self {
        Self {
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: Eq + Hash, S> KeySlab<K, S> {
    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Number of slots, in use or free (every slot number is below it).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

impl<K: Eq + Hash + Clone, S: SlotState> KeySlab<K, S> {
    /// The slot of `key`, creating an empty state for a new key.
    #[inline]
    pub fn slot_of(&mut self, key: K) -> u32 {
        use std::collections::hash_map::Entry;
        match self.index.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let key = e.key().clone();
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.slots[s as usize].key = Some(key);
                        s
                    }
                    None => {
                        self.slots.push(Slot {
                            key: Some(key),
                            state: S::default(),
                        });
                        // Slot counts beyond u32::MAX keys are not supported (4 billion
                        // live keys would not fit in memory anyway).
                        (self.slots.len() - 1) as u32
                    }
                };
                e.insert(slot);
                slot
            }
        }
    }

    /// The slot of `key` if it has state.
    #[inline]
    pub fn find(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The key and state in `slot`, if the slot is in use.
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<(&K, &mut S)> {
        let s = self.slots.get_mut(slot as usize)?;
        let key = s.key.as_ref()?;
        Some((key, &mut s.state))
    }

    /// The key and state in `slot`, if the slot is in use.
    #[inline]
    pub fn get(&self, slot: u32) -> Option<(&K, &S)> {
        let s = self.slots.get(slot as usize)?;
        Some((s.key.as_ref()?, &s.state))
    }

    /// The state in `slot` (in use or not).
    #[inline]
    pub fn state_mut(&mut self, slot: u32) -> &mut S {
        &mut self.slots[slot as usize].state
    }

    /// Removes the key in `slot`, resetting its state for reuse.
    pub fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if let Some(key) = s.key.take() {
                self.index.remove(&key);
                s.state.reset();
                self.free.push(slot);
            }
        }
    }

    /// Rebuilds the key index after deserialization.
    pub fn rebuild_index(&mut self) {
        self.index.clear();
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(k) = &s.key {
                self.index.insert(k.clone(), i as u32);
            }
        }
    }

    /// Calls `f(slot, key, state)` for every key in use, in slot order (sequential memory).
    #[inline]
    pub fn for_each_mut(&mut self, mut f: impl FnMut(u32, &K, &mut S)) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(key) = &s.key {
                f(i as u32, key, &mut s.state);
            }
        }
    }

    /// Iterates over the keys in use with their states.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &S)> {
        self.slots
            .iter()
            .filter_map(|s| s.key.as_ref().map(|k| (k, &s.state)))
    }
}

/// Timers: slots to visit once the watermark reaches a time, in time order and, for one time,
/// in registration order. Entries may be stale (the key re-registered elsewhere); operators
/// check the key's own record of its timer when one fires.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Timers {
    buckets: BTreeMap<Timestamp, Vec<u32>>,
    #[serde(skip)]
    pool: Vec<Vec<u32>>,
}

impl Timers {
    /// Visits `slot` when the watermark reaches `at`.
    #[inline]
    pub fn add(&mut self, at: Timestamp, slot: u32) {
        let pool = &mut self.pool;
        self.buckets
            .entry(at)
            .or_insert_with(|| pool.pop().unwrap_or_default())
            .push(slot);
    }

    /// Removes and returns the earliest bucket if it is due at `watermark`.
    #[inline]
    pub fn pop_due(&mut self, watermark: Timestamp) -> Option<(Timestamp, Vec<u32>)> {
        let (&at, _) = self.buckets.first_key_value()?;
        if at > watermark {
            return None;
        }
        self.buckets.pop_first()
    }

    /// Gives a fired bucket's vector back for reuse.
    #[inline]
    pub fn recycle(&mut self, mut v: Vec<u32>) {
        if self.pool.len() < 256 {
            v.clear();
            self.pool.push(v);
        }
    }
}

/// The checkpoint of a keyed operator: its definition (checked on restore), watermark, per-key
/// state and timers. Shared by the sliding, session and interval-join operators.
#[derive(Serialize)]
struct KeyedSnapRef<'a, P, K: Eq + Hash, S> {
    spec: P,
    watermark: i64,
    slab: &'a KeySlab<K, S>,
    timers: &'a Timers,
}

/// The decoded form of [`KeyedSnapRef`].
#[derive(Deserialize)]
struct KeyedSnap<P, K: Eq + Hash, S> {
    spec: P,
    watermark: i64,
    slab: KeySlab<K, S>,
    timers: Timers,
}

/// Encodes a keyed operator's checkpoint under the operator kind `tag`.
pub(crate) fn encode_keyed<P: Serialize, K: Eq + Hash + Serialize, S: Serialize>(
    tag: u8,
    spec: P,
    watermark: i64,
    slab: &KeySlab<K, S>,
    timers: &Timers,
) -> Result<Vec<u8>, StreamError> {
    codec::encode(
        tag,
        &KeyedSnapRef {
            spec,
            watermark,
            slab,
            timers,
        },
    )
}

/// Decodes a checkpoint written by [`encode_keyed`] for an operator defined by `spec` (`what`
/// names the kind in the error when the definitions differ); the key index is rebuilt.
pub(crate) fn decode_keyed<P, K, S>(
    tag: u8,
    bytes: &[u8],
    spec: &P,
    what: &str,
) -> Result<(i64, KeySlab<K, S>, Timers), StreamError>
where
    P: DeserializeOwned + PartialEq + std::fmt::Debug,
    K: Eq + Hash + Clone + DeserializeOwned,
    S: SlotState + DeserializeOwned,
{
    let snap: KeyedSnap<P, K, S> = codec::decode(tag, bytes)?;
    if snap.spec != *spec {
        return Err(StreamError::State(format!(
            "snapshot is for {what} {:?}, operator has {spec:?}",
            snap.spec
        )));
    }
    let mut slab = snap.slab;
    slab.rebuild_index();
    Ok((snap.watermark, slab, snap.timers))
}
