//! The in-process lock table: which keys of which store some holder in this
//! process has locked.
//!
//! One table serves every thread and every [`FileStore`](crate::FileStore) of
//! the process. A lock belongs to no thread: it may be taken on one thread and
//! released on another (Node hands work between its main thread and the libuv
//! threadpool). The key's lock file (FORMAT.md §6, [`crate::filelock`])
//! excludes other processes; this table excludes holders within the process,
//! so that threads of one process wait here, on a condition variable, rather
//! than polling the file.
//!
//! A slot exists only while its key is held or awaited, so the table is as
//! large as the number of keys locked right now, never the number ever locked.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// What the table locks: a store identity and a key's hash (its lock file's
/// name). Sorted, these are in the order of the lock file names.
pub(crate) type LockId = (u64, u128);

struct Slot {
    held: bool,
    waiters: usize,
    // Per slot, so that an unlock wakes only the waiters of that key.
    released: Arc<Condvar>,
}

/// A table of held locks, shared process-wide through [`LockTable::global`].
pub(crate) struct LockTable {
    slots: Mutex<HashMap<LockId, Slot>>,
}

impl LockTable {
    /// The process-wide table.
    pub(crate) fn global() -> &'static LockTable {
        static TABLE: OnceLock<LockTable> = OnceLock::new();
        TABLE.get_or_init(|| LockTable { slots: Mutex::new(HashMap::new()) })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<LockId, Slot>> {
        // Nothing panics while the mutex is held, but never let one poison every lock.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `id`, waiting until it is free.
    #[cfg(test)]
    pub(crate) fn lock(&self, id: LockId) {
        assert!(self.lock_until(id, None));
    }

    /// Takes `id`, waiting until it is free or `deadline` passes (`false`).
    pub(crate) fn lock_until(&self, id: LockId, deadline: Option<std::time::Instant>) -> bool {
        let mut slots = self.slots();
        loop {
            let slot = slots.entry(id).or_insert_with(|| Slot { held: false, waiters: 0, released: Arc::new(Condvar::new()) });
            if !slot.held {
                slot.held = true;
                return true;
            }
            slot.waiters += 1;
            let released = Arc::clone(&slot.released);
            let mut timed_out = false;
            slots = match deadline {
                None => released.wait(slots).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    let (g, r) = released.wait_timeout(slots, left).unwrap_or_else(PoisonError::into_inner);
                    timed_out = r.timed_out();
                    g
                }
            };
            // The slot cannot have been removed: it had a waiter, us.
            if let Some(slot) = slots.get_mut(&id) {
                slot.waiters -= 1;
                if timed_out && !slot.held {
                    slot.held = true;
                    return true;
                }
                if timed_out {
                    return false;
                }
            }
        }
    }

    /// Takes `id` if it is free; never waits.
    pub(crate) fn try_lock(&self, id: LockId) -> bool {
        let mut slots = self.slots();
        match slots.get_mut(&id) {
            Some(slot) if slot.held => false,
            Some(slot) => {
                slot.held = true;
                true
            }
            None => {
                slots.insert(id, Slot { held: true, waiters: 0, released: Arc::new(Condvar::new()) });
                true
            }
        }
    }

    /// Releases `id` (a no-op if it is not held).
    pub(crate) fn unlock(&self, id: LockId) {
        let mut slots = self.slots();
        if let Some(slot) = slots.get_mut(&id) {
            slot.held = false;
            if slot.waiters == 0 {
                slots.remove(&id);
            } else {
                slot.released.notify_one();
            }
        }
    }

    /// How many slots exist (held or awaited keys).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    /// How many slots of one store exist: the table is process-wide, and
    /// tests of other stores run at the same time.
    #[cfg(test)]
    pub(crate) fn len_of(&self, store: u64) -> usize {
        self.slots().keys().filter(|id| id.0 == store).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_lock_excludes_and_unlock_frees() {
        let table = LockTable { slots: Mutex::new(HashMap::new()) };
        assert!(table.try_lock((1, 1)));
        assert!(!table.try_lock((1, 1)));
        assert!(table.try_lock((2, 1)), "another store is another lock");
        table.unlock((1, 1));
        table.unlock((2, 1));
        assert_eq!(table.len(), 0);
        table.unlock((3, 3)); // not held: nothing happens
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn waiter_gets_the_lock_from_another_thread() {
        let table = Arc::new(LockTable { slots: Mutex::new(HashMap::new()) });
        table.lock((0, 7));
        let t = Arc::clone(&table);
        let waiter = std::thread::spawn(move || {
            t.lock((0, 7));
            t.unlock((0, 7));
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        table.unlock((0, 7));
        waiter.join().unwrap();
        assert_eq!(table.len(), 0);
    }
}
