//! The eviction index: every committed object of a bounded store in least
//! recently used order, with its size and refs, and the exact total; and
//! the running total's file `meta/total` that says whether the index is
//! still true.
//!
//! The index lives in this process (one per [`super::Store`]) and is read
//! and changed only under the exclusive `meta/` lock. It is built by one
//! full scan (every ref, every sidecar) the first time it is needed and
//! whenever it may be out of date; otherwise an eviction costs in
//! proportion to what it evicts, plus `O(log n)` per victim.
//!
//! **Whether it is out of date.** Every writer of `meta/total` (the commit
//! of a bounded store, each eviction) writes under the lock, besides the
//! total, the boot, a random nonce for the file's life and a change
//! counter. An index is used only when the file still holds the stamp of
//! the index's own last read or write; otherwise another process committed
//! or evicted, the file was removed (a settings change) or rewritten by an
//! older osstore, or the machine rebooted, and the index is rebuilt. An
//! eviction changes the counter before it removes anything, so a process
//! killed mid-way makes every other index stale. What changes no counter,
//! and is seen only at the next rebuild: commits by osstore 0.1 tools and
//! refs changed by hand.
//!
//! **Last use** changes without a counter (a look-up only touches the
//! sidecar's mtime), so it is verified lazily: the least indexed object's
//! sidecar is `fstatat`ed; when it was used after the time indexed (or its
//! time differs otherwise), it is put back with its new time and the next
//! least is taken. Last use only grows, so a verified least object is the
//! true least. (A last use set back by hand, or by a clock set back, is
//! seen only when that object comes first, or at the next rebuild.)

use std::collections::{BTreeSet, HashMap};
use std::sync::MutexGuard;

use super::Store;
use crate::cache::sidecar::Info;
use crate::error::{Error, Result};
use crate::lock::DirLock;

/// The running total's file in `meta/`.
const TOTAL: &str = "total";

/// What makes a running total file, and the index that wrote or read it,
/// the same: a file rewritten by anybody else has another stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    nonce: u128,
    counter: u64,
}

impl Stamp {
    /// The stamp the next write of the file carries.
    pub(crate) fn next(previous: Option<&Stamp>) -> Stamp {
        match previous {
            Some(s) => Stamp {
                nonce: s.nonce,
                counter: s.counter.wrapping_add(1),
            },
            None => Stamp {
                nonce: uuid::Uuid::new_v4().as_u128(),
                counter: 0,
            },
        }
    }
}

/// The contents of `meta/total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunningTotal {
    pub(crate) total: u64,
    /// `None` for a file written by an older osstore (boot and total only).
    pub(crate) stamp: Option<Stamp>,
}

impl RunningTotal {
    /// The file's text, `<boot> <total> <nonce> <counter>`, for `total`
    /// written with `stamp`.
    pub(crate) fn encode(total: u64, stamp: &Stamp, boot: &str) -> String {
        format!("{boot} {total} {:032x} {}\n", stamp.nonce, stamp.counter)
    }

    /// Parses the file's text; `None` when it is not one, or was written
    /// in another boot than `boot` (a power cut may have lost a write).
    pub(crate) fn decode(text: &str, boot: &str) -> Option<RunningTotal> {
        let mut fields = text.split_whitespace();
        if fields.next()? != boot {
            return None;
        }
        let total = fields.next()?.parse().ok()?;
        let stamp = match (fields.next(), fields.next()) {
            (Some(nonce), Some(counter)) => Some(Stamp {
                nonce: u128::from_str_radix(nonce, 16).ok()?,
                counter: counter.parse().ok()?,
            }),
            _ => None,
        };
        Some(RunningTotal { total, stamp })
    }
}

/// An indexed object.
#[derive(Debug, Clone)]
pub(crate) struct Indexed {
    pub(crate) used: i64,
    pub(crate) created: i64,
    pub(crate) size: u64,
    /// The refs naming it (several, when made by hand).
    pub(crate) ids: Vec<String>,
}

/// Order key: last use, then creation, then name.
type Key = (i64, i64, String);

fn key(name: &str, o: &Indexed) -> Key {
    (o.used, o.created, name.to_owned())
}

/// The committed objects in least recently used order; see the module
/// documentation.
#[derive(Debug, Default)]
pub(crate) struct LruIndex {
    /// The stamp of `meta/total` this index is true for; `None`: not built
    /// or out of date.
    stamp: Option<Stamp>,
    order: BTreeSet<Key>,
    objects: HashMap<String, Indexed>,
    total: u64,
}

impl LruIndex {
    /// Whether the index is true for a file holding `file`.
    pub(crate) fn matches(&self, file: Option<&RunningTotal>) -> bool {
        self.stamp.is_some() && file.and_then(|f| f.stamp.as_ref()) == self.stamp.as_ref()
    }

    /// Whether the index is true for a file with `stamp`.
    pub(crate) fn is_true_at(&self, stamp: &Stamp) -> bool {
        self.stamp.as_ref() == Some(stamp)
    }

    /// Marks the index true for a file with `stamp` (just written or read).
    pub(crate) fn set_stamp(&mut self, stamp: Option<Stamp>) {
        self.stamp = stamp;
    }

    /// Marks the index out of date: the next user rebuilds it.
    pub(crate) fn invalidate(&mut self) {
        self.stamp = None;
    }

    /// Starts a rebuild: empties the index.
    pub(crate) fn clear(&mut self) {
        *self = LruIndex::default();
    }

    /// The exact total of the indexed objects.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Adds the ref `id` naming `objects/<name>`, last used at `used`.
    pub(crate) fn add(&mut self, id: &str, name: &str, info: &Info, used: i64) {
        if self.add_ref(id, name) {
            return;
        }
        let o = Indexed {
            used,
            created: info.created,
            size: info.size,
            ids: vec![id.to_owned()],
        };
        self.order.insert(key(name, &o));
        self.total += o.size;
        self.objects.insert(name.to_owned(), o);
    }

    /// Adds the ref `id` to the indexed `objects/<name>`; `false` when that
    /// object is not indexed (add it with [`Self::add`]).
    pub(crate) fn add_ref(&mut self, id: &str, name: &str) -> bool {
        let Some(o) = self.objects.get_mut(name) else {
            return false;
        };
        if !o.ids.iter().any(|i| i == id) {
            o.ids.push(id.to_owned());
        }
        true
    }

    /// The ref `id` no longer names `objects/<name>` (a commit replaced
    /// it); the object leaves the index (and the total) with its last ref.
    pub(crate) fn remove_ref(&mut self, id: &str, name: &str) {
        let Some(o) = self.objects.get_mut(name) else {
            return;
        };
        o.ids.retain(|i| i != id);
        if o.ids.is_empty() {
            self.remove(name);
        }
    }

    /// The bytes the total would lose if the ref `id` stopped naming
    /// `objects/<name>`.
    pub(crate) fn size_freed_by_replacing(&self, id: &str, name: &str) -> u64 {
        match self.objects.get(name) {
            Some(o) if o.ids.iter().all(|i| i == id) => o.size,
            _ => 0,
        }
    }

    /// Takes the least recently used object out of the order (it stays
    /// indexed: put it back with [`Self::put_back`] or drop it with
    /// [`Self::remove`]).
    pub(crate) fn pop_least(&mut self) -> Option<(String, Indexed)> {
        let (_, _, name) = self.order.pop_first()?;
        let o = self.objects.get(&name)?.clone();
        Some((name, o))
    }

    /// Puts a popped object back in the order, last used at `used`.
    pub(crate) fn put_back(&mut self, name: &str, used: i64) {
        if let Some(o) = self.objects.get_mut(name) {
            o.used = used;
            self.order.insert(key(name, o));
        }
    }

    /// Drops `objects/<name>` from the index and the total.
    pub(crate) fn remove(&mut self, name: &str) {
        if let Some(o) = self.objects.remove(name) {
            self.order.remove(&key(name, &o));
            self.total -= o.size;
        }
    }

    /// Drops `objects/<name>` from the index, its size kept in the total
    /// (an object whose refs changed behind the index: the total may then
    /// be too high, never too low, until the next rebuild).
    pub(crate) fn forget(&mut self, name: &str) {
        if let Some(o) = self.objects.remove(name) {
            self.order.remove(&key(name, &o));
        }
    }
}

impl Store {
    /// This store's eviction index (lock `meta/` first).
    pub(super) fn lru_index(&self) -> MutexGuard<'_, LruIndex> {
        super::lock_ignoring_poison(&self.inner.lru)
    }

    /// Rebuilds the index by a full scan: every ref and every sidecar.
    pub(super) fn rebuild_index(&self, index: &mut LruIndex) -> Result<()> {
        index.clear();
        let (entries, _) = self.ref_entries()?;
        for e in entries {
            if !index.add_ref(&e.id, &e.name) {
                let (info, used) = self.object_info(&e.name)?;
                index.add(&e.id, &e.name, &info, used);
            }
        }
        Ok(())
    }

    /// The running total, if it was written in this boot.
    pub(super) fn read_total(&self) -> Option<RunningTotal> {
        // One read: the file is one short line.
        let mut buf = [0u8; 256];
        let mut file = std::fs::File::open(self.inner.meta.join(TOTAL)).ok()?;
        let n = std::io::Read::read(&mut file, &mut buf).ok()?;
        RunningTotal::decode(std::str::from_utf8(&buf[..n]).ok()?, boot_id())
    }

    /// Writes the running total with the stamp that follows `previous`
    /// (the one read); returns the new stamp.
    pub(super) fn write_total(&self, total: u64, previous: Option<&Stamp>) -> Result<Stamp> {
        let stamp = Stamp::next(previous);
        let text = RunningTotal::encode(total, &stamp, boot_id());
        let path = self.inner.meta.join(TOTAL);
        std::fs::write(&path, text).map_err(|e| Error::path("cannot write", &path, e))?;
        Ok(stamp)
    }

    /// Drops the running total (the bound changed from or to unlimited):
    /// the next commit sums the objects afresh.
    pub(crate) fn forget_total(&self) -> Result<()> {
        let _lock = DirLock::exclusive(&self.inner.meta)?;
        self.remove_total()
    }

    pub(super) fn remove_total(&self) -> Result<()> {
        let path = self.inner.meta.join(TOTAL);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::path("cannot remove", &path, e))
            }
            _ => Ok(()),
        }
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
fn boot_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(created: i64, size: u64) -> Info {
        Info {
            created,
            size,
            ..Info::default()
        }
    }

    #[test]
    fn running_totals_round_trip_and_belong_to_their_boot() {
        let stamped = RunningTotal {
            total: 42,
            stamp: Some(Stamp::next(None)),
        };
        let text = RunningTotal::encode(42, stamped.stamp.as_ref().unwrap(), "b1");
        assert_eq!(RunningTotal::decode(&text, "b1"), Some(stamped.clone()));
        assert_eq!(RunningTotal::decode(&text, "b2"), None);
        // The format of earlier versions: a total without a stamp.
        let old = RunningTotal::decode("b1 7\n", "b1").unwrap();
        assert_eq!((old.total, old.stamp), (7, None));
        let next = Stamp::next(stamped.stamp.as_ref());
        assert_ne!(Some(&next), stamped.stamp.as_ref());
        assert_ne!(Stamp::next(None), Stamp::next(None));
    }

    #[test]
    fn an_index_matches_only_its_own_stamp() {
        let mut index = LruIndex::default();
        let file = RunningTotal {
            total: 0,
            stamp: Some(Stamp::next(None)),
        };
        assert!(!index.matches(Some(&file)));
        index.set_stamp(file.stamp.clone());
        assert!(index.matches(Some(&file)));
        assert!(!index.matches(None));
        let old = RunningTotal {
            total: 0,
            stamp: None,
        };
        assert!(!index.matches(Some(&old)));
        index.invalidate();
        assert!(!index.matches(Some(&file)));
    }

    #[test]
    fn objects_come_least_recently_used_first_ties_by_creation() {
        let mut index = LruIndex::default();
        index.add("c", "n3", &info(5, 30), 20);
        index.add("a", "n1", &info(9, 10), 10);
        index.add("b", "n2", &info(1, 20), 20);
        index.add("b2", "n2", &info(1, 20), 20);
        assert_eq!(index.total(), 60);
        let (name, o) = index.pop_least().unwrap();
        assert_eq!((name.as_str(), o.ids), ("n1", vec!["a".to_owned()]));
        // Used since: back in the order at its new place.
        index.put_back("n1", 30);
        let order: Vec<_> = std::iter::from_fn(|| index.pop_least().map(|(n, _)| n)).collect();
        assert_eq!(order, ["n2", "n3", "n1"]);
    }

    #[test]
    fn replaced_refs_leave_the_total_with_their_objects_last_ref() {
        let mut index = LruIndex::default();
        index.add("a", "n1", &info(1, 10), 1);
        index.add("b", "n1", &info(1, 10), 1);
        index.add("c", "n2", &info(1, 5), 1);
        assert_eq!(index.size_freed_by_replacing("a", "n1"), 0);
        index.remove_ref("a", "n1");
        assert_eq!(index.size_freed_by_replacing("b", "n1"), 10);
        index.remove_ref("b", "n1");
        assert_eq!(index.total(), 5);
        index.forget("n2");
        assert_eq!(index.total(), 5);
        assert!(index.pop_least().is_none());
    }
}
