//! The entries a plan sends, held as compactly as the scan held them.
//!
//! A first sync sends every scanned entry. Turning each into a
//! [`PlanItem`] up front would hold the tree twice over at its peak (the
//! scan's entries and the items); instead the scan's own buffer is
//! filtered in place and each entry kept gets one byte saying what to do.
//! An item is made whole only when it is taken ([`PlanItems::pop_front`]),
//! so a million-file first sync costs what a no-change run costs, plus a
//! byte per entry.

use std::collections::{HashMap, VecDeque};

use ferry_proto::{Hash, RelPath};

use super::plan::{Action, PlanItem};
use crate::scan::ScanEntry;

/// What to do with one kept entry, in a byte; a metadata-only entry's hash
/// is in [`PlanItems::hashes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Todo {
    New,
    Changed,
    MetadataOnly,
}

/// Entries to send, in scan order (parents before children).
#[derive(Debug, Default)]
pub struct PlanItems {
    entries: VecDeque<ScanEntry>,
    /// One per entry, in the same order.
    todo: VecDeque<Todo>,
    /// The unchanged content hash of each metadata-only entry (rare: a
    /// touch, a chmod), by path.
    hashes: HashMap<RelPath, Hash>,
}

impl PlanItems {
    /// Items from `entries` with one `todo` each; `hashes` holds the hash of
    /// every metadata-only one (one without is sent as changed).
    pub(super) fn new(
        entries: Vec<ScanEntry>,
        todo: Vec<Todo>,
        hashes: HashMap<RelPath, Hash>,
    ) -> PlanItems {
        debug_assert_eq!(entries.len(), todo.len());
        PlanItems {
            entries: entries.into(),
            todo: todo.into(),
            hashes,
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scanned entries, in order (to count what the run will send).
    pub fn entries(&self) -> impl Iterator<Item = &ScanEntry> {
        self.entries.iter()
    }

    /// Each entry with its action, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ScanEntry, Action)> {
        self.entries
            .iter()
            .zip(&self.todo)
            .map(|(entry, todo)| (entry, self.action(entry, *todo)))
    }

    fn action(&self, entry: &ScanEntry, todo: Todo) -> Action {
        match todo {
            Todo::New => Action::New,
            Todo::Changed => Action::Changed,
            Todo::MetadataOnly => match self.hashes.get(&entry.path) {
                Some(hash) => Action::MetadataOnly { hash: *hash },
                None => Action::Changed,
            },
        }
    }

    /// Takes the first item.
    pub fn pop_front(&mut self) -> Option<PlanItem> {
        let entry = self.entries.pop_front()?;
        let action = match self.todo.pop_front() {
            Some(Todo::MetadataOnly) => match self.hashes.remove(&entry.path) {
                Some(hash) => Action::MetadataOnly { hash },
                None => Action::Changed,
            },
            Some(Todo::New) => Action::New,
            Some(Todo::Changed) | None => Action::Changed,
        };
        Some(PlanItem { entry, action })
    }

    /// Puts `item` back in front (a lane that stopped returns what it had
    /// read but not sent).
    pub fn push_front(&mut self, item: PlanItem) {
        let todo = match item.action {
            Action::New => Todo::New,
            Action::Changed => Todo::Changed,
            Action::MetadataOnly { hash } => {
                self.hashes.insert(item.entry.path.clone(), hash);
                Todo::MetadataOnly
            }
        };
        self.entries.push_front(item.entry);
        self.todo.push_front(todo);
    }

    /// Takes out, in order, the items for which `take` is true (a run's
    /// large files, which go a stream each); the rest stay in order.
    pub fn split_off_where(
        &mut self,
        mut take: impl FnMut(&ScanEntry, &Action) -> bool,
    ) -> Vec<PlanItem> {
        let mut taken = Vec::new();
        let mut keep = Vec::with_capacity(self.entries.len());
        for (entry, todo) in self.entries.iter().zip(&self.todo) {
            let action = self.action(entry, *todo);
            let out = take(entry, &action);
            if out {
                taken.push(PlanItem {
                    entry: entry.clone(),
                    action,
                });
            }
            keep.push(!out);
        }
        if taken.is_empty() {
            return taken;
        }
        // `retain` visits each element once, in order.
        let mut kept = keep.iter();
        self.entries
            .retain(|_| kept.next().copied().unwrap_or(true));
        let mut kept = keep.iter();
        self.todo.retain(|_| kept.next().copied().unwrap_or(true));
        for item in &taken {
            self.hashes.remove(&item.entry.path);
        }
        taken
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;
    use crate::scan::ScanKind;

    fn entry(path: &str, size: u64) -> ScanEntry {
        ScanEntry {
            path: RelPath::from_bytes(path).unwrap(),
            kind: ScanKind::File,
            size,
            mtime_ns: 1,
            mode: 0o644,
            ino: 1,
            dev: 1,
        }
    }

    fn items() -> PlanItems {
        let entries = vec![
            entry("a", 1),
            entry("b", 1 << 30),
            entry("c", 2),
            entry("d", 1 << 30),
            entry("e", 3),
        ];
        let todo = vec![
            Todo::New,
            Todo::MetadataOnly,
            Todo::MetadataOnly,
            Todo::Changed,
            Todo::MetadataOnly,
        ];
        let hashes = [("b", [2; 32]), ("c", [3; 32])]
            .into_iter()
            .map(|(p, h)| (RelPath::from_bytes(p).unwrap(), h))
            .collect();
        PlanItems::new(entries, todo, hashes)
    }

    fn named(items: impl IntoIterator<Item = PlanItem>) -> Vec<(String, Action)> {
        items
            .into_iter()
            .map(|i| (i.entry.path.to_string(), i.action))
            .collect()
    }

    #[test]
    fn items_come_out_in_order_with_their_actions() {
        let mut items = items();
        assert_eq!(items.len(), 5);
        let seen: Vec<_> = items.iter().map(|(e, a)| (e.path.to_string(), a)).collect();
        let popped = named(std::iter::from_fn(|| items.pop_front()));
        assert_eq!(popped, seen);
        assert_eq!(
            popped,
            [
                ("a".to_string(), Action::New),
                ("b".to_string(), Action::MetadataOnly { hash: [2; 32] }),
                ("c".to_string(), Action::MetadataOnly { hash: [3; 32] }),
                ("d".to_string(), Action::Changed),
                // Metadata-only without a known hash: its content is sent.
                ("e".to_string(), Action::Changed),
            ]
        );
        assert!(items.is_empty() && items.hashes.is_empty());
    }

    #[test]
    fn split_off_takes_the_chosen_and_keeps_the_rest_in_order() {
        let mut items = items();
        let large = items.split_off_where(|e, _| e.size > 1 << 20);
        assert_eq!(
            named(large),
            [
                ("b".to_string(), Action::MetadataOnly { hash: [2; 32] }),
                ("d".to_string(), Action::Changed),
            ]
        );
        assert_eq!(items.len(), 3);
        assert!(!items
            .hashes
            .contains_key(&RelPath::from_bytes("b").unwrap()));
        let rest = named(std::iter::from_fn(|| items.pop_front()));
        assert_eq!(
            rest,
            [
                ("a".to_string(), Action::New),
                ("c".to_string(), Action::MetadataOnly { hash: [3; 32] }),
                ("e".to_string(), Action::Changed),
            ]
        );
        assert!(items.split_off_where(|_, _| false).is_empty());
    }

    #[test]
    fn an_item_put_back_comes_out_first_as_it_was() {
        let mut items = items();
        let a = items.pop_front().unwrap();
        let b = items.pop_front().unwrap();
        items.push_front(b);
        items.push_front(a);
        assert_eq!(items.len(), 5);
        let again = named(std::iter::from_fn(|| items.pop_front()));
        assert_eq!(
            again[..2],
            [
                ("a".to_string(), Action::New),
                ("b".to_string(), Action::MetadataOnly { hash: [2; 32] }),
            ]
        );
    }
}
