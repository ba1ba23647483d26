//! Staging file names (FORMAT.md §5): `.<32 hex>.<pid>.<seq>.stage`, unique per
//! write, and the registry of this process's staging files in flight.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::filelock::field;
use crate::keyhash::is_lower_hex;
use crate::vfs::{real_identity, Identity};

const SUFFIX: &str = ".stage";

/// A staging sequence number is `tag << 32 | engine << 31 | count` (FORMAT.md
/// §5). `tag` names the boot, pid namespace and host the writer ran in, so
/// that a sweep can tell a writer whose pid it can check from one whose pid
/// means nothing here (another container on a shared volume, another host on
/// a network file system). `engine` is 0 here and 1 in the TypeScript engine:
/// the two count apart in one process and never make the same name.
const TAG_SHIFT: u32 = 32;
/// Tags run from 1 to this; 0 is a name of a build before tags, judged by its pid alone.
const TAG_MAX: u64 = (1 << 20) - 1;
const COUNT_MASK: u64 = (1 << 31) - 1;

/// The tag of a process (see [`TAG_SHIFT`]): a hash of its boot id, pid
/// namespace and host name as its lock records write them, in 1..=[`TAG_MAX`].
pub fn namespace_tag_of(who: &Identity) -> u64 {
    let line = format!("konserve-stage {} {} {}", field(&who.boot_id), field(&who.pid_ns), field(&who.host));
    xxhash_rust::xxh3::xxh3_64(line.as_bytes()) % TAG_MAX + 1
}

/// This process's tag.
pub fn namespace_tag() -> u64 {
    static TAG: OnceLock<u64> = OnceLock::new();
    *TAG.get_or_init(|| namespace_tag_of(&real_identity()))
}

/// The next staging sequence number of this process.
pub(crate) fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    (namespace_tag() << TAG_SHIFT) | (SEQ.fetch_add(1, Ordering::Relaxed) & COUNT_MASK)
}

/// Whether a staging file of `seq` was written in another boot, pid
/// namespace or host than this process (a tag neither ours nor 0).
pub fn written_elsewhere(seq: u64) -> bool {
    let tag = seq >> TAG_SHIFT;
    tag != 0 && tag != namespace_tag()
}

/// What the sweep on open does with a staging file that no write of this
/// process has in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its writer is gone: remove it.
    Remove,
    /// This process's pid in this namespace: remove it unless a write of
    /// this process has it in flight.
    RemoveUnlessInFlight,
    /// A live process of this namespace (or one that cannot be told) writes it.
    Keep,
    /// Written elsewhere (its tag is not ours), where its pid cannot be
    /// checked: kept until it is `lease` old unchanged, which is still this long.
    KeepFor(Duration),
}

/// The fate of the staging file of `pid` and `seq` (see [`Fate`]). `age`
/// (now minus the file's mtime) is asked only for a file written elsewhere.
pub fn fate(pid: u32, seq: u64, alive: impl FnOnce(u32) -> bool, age: impl FnOnce() -> Option<Duration>, lease: Duration) -> Fate {
    if !written_elsewhere(seq) {
        return if pid == std::process::id() {
            Fate::RemoveUnlessInFlight
        } else if alive(pid) {
            Fate::Keep
        } else {
            Fate::Remove
        };
    }
    match age() {
        // Gone already, or unreadable: nothing to decide now.
        None => Fate::Keep,
        Some(age) if age >= lease => Fate::Remove,
        Some(age) => Fate::KeepFor(lease - age),
    }
}

/// Runs `stage` over `items`, split into parts on up to `threads` scoped
/// threads (creating, writing and syncing many small files is latency-bound,
/// and the file system makes many of them durable in one journal commit).
/// Everything any part staged ends up in `staged`, even from a part that
/// failed, so that the caller can remove what it does not rename; the first
/// failure is returned.
pub(crate) fn stage_parallel<T: Sync, S: Send>(
    items: &[T],
    threads: usize,
    staged: &mut Vec<S>,
    stage: impl Fn(&[T], &mut Vec<S>) -> Result<()> + Sync,
) -> Result<()> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return stage(items, staged);
    }
    let per = items.len().div_ceil(threads);
    let stage = &stage;
    let results: Vec<(Vec<S>, Result<()>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    let mut mine = Vec::with_capacity(part.len());
                    let r = stage(part, &mut mine);
                    (mine, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| (Vec::new(), Err(Error::new(ErrorCode::Io, "a staging thread panicked")))))
            .collect()
    });
    let mut first = Ok(());
    for (mine, r) in results {
        staged.extend(mine);
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// The staging name for the key file `<hex32>.ksv`.
pub fn staging_name(hex32: &str, pid: u32, seq: u64) -> String {
    format!(".{hex32}.{pid}.{seq}{SUFFIX}")
}

/// The `(pid, seq)` of a staging name, or `None` for any other name, including
/// near misses (upper-case hex, a sign, leading zeros, pid 0), which we never wrote.
pub fn parse_staging_name(name: &str) -> Option<(u32, u64)> {
    let middle = name.strip_prefix('.')?.strip_suffix(SUFFIX)?;
    let mut parts = middle.split('.');
    let (hex, pid, seq) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || hex.len() != 32 || !is_lower_hex(hex.as_bytes()) {
        return None;
    }
    let pid: u32 = canonical_decimal(pid)?.try_into().ok()?;
    let seq = canonical_decimal(seq)?;
    (pid != 0).then_some((pid, seq))
}

fn canonical_decimal(s: &str) -> Option<u64> {
    let digits = s.bytes().all(|b| b.is_ascii_digit());
    if s.is_empty() || !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

type InFlightSet = HashSet<(u64, String)>;

fn in_flight() -> MutexGuard<'static, InFlightSet> {
    static SET: OnceLock<Mutex<InFlightSet>> = OnceLock::new();
    SET.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// A staging file of this process that exists or is about to: registered from
/// before its creation until it is renamed or removed (when this is dropped).
///
/// Lets the sweep on open tell a leftover that merely has our pid (a previous
/// process of the same pid, common in containers) from a live write.
pub(crate) struct InFlight {
    store: u64,
    name: String,
}

impl InFlight {
    pub(crate) fn register(store: u64, name: String) -> InFlight {
        in_flight().insert((store, name.clone()));
        InFlight { store, name }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().remove(&(self.store, std::mem::take(&mut self.name)));
    }
}

/// Staging files of this process written by another engine over the same
/// directories (the TypeScript one, through the binding), by store id and
/// name: registered here too, so that this engine's sweep on open does not
/// take them for a dead process's, and that engine's sweep can ask
/// [`in_flight_in`] about this one's.
fn foreign() -> MutexGuard<'static, std::collections::HashMap<(u64, String), InFlight>> {
    static MAP: OnceLock<Mutex<std::collections::HashMap<(u64, String), InFlight>>> = OnceLock::new();
    MAP.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// The id of the store in the canonical directory `dir`, as an open store has it.
pub fn store_id(dir: &std::path::Path) -> u64 {
    xxhash_rust::xxh3::xxh3_64(dir.as_os_str().as_encoded_bytes())
}

/// Registers staging file `name` of the store in the canonical directory
/// `dir` as in flight for another engine of this process (until
/// [`release_foreign`]).
pub fn register_foreign(dir: &std::path::Path, name: &str) {
    let id = store_id(dir);
    // Once: a second registration replacing the first would drop the first's
    // guard, which takes the name out of the registry again.
    foreign().entry((id, name.to_string())).or_insert_with(|| InFlight::register(id, name.to_string()));
}

/// Ends a registration of [`register_foreign`].
pub fn release_foreign(dir: &std::path::Path, name: &str) {
    foreign().remove(&(store_id(dir), name.to_string()));
}

/// Whether staging file `name` of the store in the canonical directory `dir`
/// is in flight in this process (a write of this engine, or one registered
/// by another).
pub fn in_flight_in(dir: &std::path::Path, name: &str) -> bool {
    in_flight().contains(&(store_id(dir), name.to_string()))
}

/// Runs `remove` unless `name` is in flight in `store`, holding the registry so
/// that no write can register the name meanwhile.
pub(crate) fn remove_unless_in_flight(store: u64, name: &str, remove: impl FnOnce()) {
    let set = in_flight();
    if !set.contains(&(store, name.to_string())) {
        remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef";
    /// The tag of boot id `b`, pid namespace 4026531836 and host `h`.
    const TAG_VECTOR: u64 = 131_812;

    #[test]
    fn another_engines_staging_file_is_in_flight_until_released() {
        let dir = std::path::Path::new("/a/store/of/the/foreign/registration/test");
        let name = staging_name(HEX, std::process::id(), 3);
        assert!(!in_flight_in(dir, &name));
        register_foreign(dir, &name);
        register_foreign(dir, &name);
        assert!(in_flight_in(dir, &name), "registered twice, still in flight");
        let id = store_id(dir);
        let mut removed = false;
        remove_unless_in_flight(id, &name, || removed = true);
        assert!(!removed, "a sweep leaves it");
        release_foreign(dir, &name);
        assert!(!in_flight_in(dir, &name));
        remove_unless_in_flight(id, &name, || removed = true);
        assert!(removed);
    }

    #[test]
    fn a_sweep_judges_a_pid_only_where_it_means_something() {
        let me = std::process::id();
        let here = namespace_tag() << TAG_SHIFT;
        let lease = Duration::from_secs(30);
        let elsewhere = (namespace_tag() % TAG_MAX + 1) << TAG_SHIFT;
        let never = || -> Option<Duration> { panic!("the age of a file of this namespace is never asked") };
        // Written here (or by a build before tags): the pid decides.
        for seq in [here | 5, (1 << 31) | here | 5, 5] {
            assert_eq!(fate(me, seq, |_| true, never, lease), Fate::RemoveUnlessInFlight);
            assert_eq!(fate(me + 1, seq, |_| false, never, lease), Fate::Remove);
            assert_eq!(fate(me + 1, seq, |_| true, never, lease), Fate::Keep);
        }
        // Written elsewhere, by a process with our pid or a pid dead here: the file's age decides.
        for pid in [me, me + 1] {
            let dead = |_| panic!("a pid of another namespace is never checked");
            assert_eq!(fate(pid, elsewhere | 5, dead, || Some(Duration::from_secs(1)), lease), Fate::KeepFor(Duration::from_secs(29)));
            assert_eq!(fate(pid, elsewhere | 5, dead, || Some(lease), lease), Fate::Remove);
            assert_eq!(fate(pid, elsewhere | 5, dead, || None, lease), Fate::Keep);
        }
    }

    #[test]
    fn the_tag_names_the_boot_the_pid_namespace_and_the_host() {
        let who = Identity { boot_id: Some("b".into()), pid_ns: Some(4026531836), pid: 1, start_ticks: Some(9), host: Some("h".into()) };
        let tag = namespace_tag_of(&who);
        assert!((1..=TAG_MAX).contains(&tag));
        // The pid and the start time are not part of it: every process of the namespace has one tag.
        assert_eq!(tag, namespace_tag_of(&Identity { pid: 2, start_ticks: Some(10), ..who.clone() }));
        assert_ne!(tag, namespace_tag_of(&Identity { pid_ns: Some(4026532000), ..who.clone() }));
        assert_ne!(tag, namespace_tag_of(&Identity { boot_id: Some("c".into()), ..who.clone() }));
        assert_ne!(tag, namespace_tag_of(&Identity { host: None, ..who.clone() }));
        // The vector the TypeScript engine checks too (__test__/staging-namespaces.spec.ts).
        assert_eq!(tag, TAG_VECTOR);
        assert!(next_seq() >> TAG_SHIFT == namespace_tag() && next_seq() & (1 << 31) == 0);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_staging_name(&staging_name(HEX, 42, 7)), Some((42, 7)));
        assert_eq!(parse_staging_name(&staging_name(HEX, u32::MAX, u64::MAX)), Some((u32::MAX, u64::MAX)));
    }

    #[test]
    fn near_misses_are_not_staging_names() {
        for name in [
            format!("{HEX}.1.1.stage"),
            format!(".{HEX}.1.1.stage~"),
            format!(".{HEX}.1.stage"),
            format!(".{HEX}.1.1.1.stage"),
            format!(".{HEX}.0.1.stage"),
            format!(".{HEX}.01.1.stage"),
            format!(".{HEX}.1.01.stage"),
            format!(".{HEX}.+1.1.stage"),
            format!(".{HEX}.-1.1.stage"),
            format!(".{HEX}..1.stage"),
            format!(".{HEX}.4294967296.1.stage"),
            format!(".{}.1.1.stage", HEX.to_uppercase()),
            format!(".{}.1.1.stage", &HEX[1..]),
            ".konserve.lock".to_string(),
        ] {
            assert_eq!(parse_staging_name(&name), None, "{name}");
        }
    }
}
