//! A folder's protection on the receiver: chosen by the sender when it
//! first sends the folder (`Hello` is plain, `HelloProtected` says
//! encrypted or write-only and the key id), recorded in the catalog, and
//! fixed afterwards. The receiver never holds a key, only its id, so it can
//! refuse a run sealed to another key or sent in another mode. A folder
//! with runs and no record was sent before protection existed: plain.

use ferry_proto::{Hash, Name, Protection};

use super::error::hex;
use super::{now_ms, Namespace, SenderRecord, Store, StoreError};

/// How many bytes of a key id are shown (`ferry senders`, refusals).
const SHORT_KEY: usize = 6;

/// The first bytes of a key id in hex, as people compare them.
pub fn short_key(key: &Hash) -> String {
    hex(&key[..SHORT_KEY])
}

/// The mode's name as the command line spells it (`--protect`).
pub fn mode_name(protection: &Protection) -> &'static str {
    match protection {
        Protection::Plain => "plain",
        Protection::Encrypted { .. } => "encrypted",
        Protection::WriteOnly { .. } => "write-only",
    }
}

/// The mode and its short key id, in words: `encrypted with key ab12…`.
pub fn describe(protection: &Protection) -> String {
    match protection {
        Protection::Plain => "plain".into(),
        Protection::Encrypted { key } | Protection::WriteOnly { key } => {
            format!("{} with key {}…", mode_name(protection), short_key(key))
        }
    }
}

impl Store {
    /// The protection of `folder` of the sender named `sender`, as readers
    /// ask for it (a read session's `Request::Protection`, a `--store`
    /// reader): `Plain` for a folder never sent, or sent before protection
    /// existed.
    pub fn folder_protection(
        &self,
        sender: &Name,
        folder: &Name,
    ) -> Result<Protection, StoreError> {
        Ok(self
            .catalog()
            .folder_protection_by_name(sender, folder)?
            .unwrap_or(Protection::Plain))
    }

    /// The protection `sender`'s `folder` is fixed to; `None` for a folder
    /// it has never sent (no record and no run): its first run fixes it.
    pub fn recorded_protection(
        &self,
        sender: &SenderRecord,
        folder: &Name,
    ) -> Result<Option<Protection>, StoreError> {
        let cat = self.catalog();
        if let Some(recorded) = cat.folder_protection(sender.id, folder)? {
            return Ok(Some(recorded));
        }
        Ok(cat
            .folder_known(sender.id, folder)?
            .then_some(Protection::Plain))
    }

    /// Fixes the protection of `ns` as its run begins: a folder without
    /// one is recorded as `asked`; returns the protection now recorded,
    /// which is not `asked` when the folder had another (the caller
    /// refuses the run then). Checked and recorded under the catalog's
    /// lock, so two first runs of one folder cannot both fix it.
    pub fn fix_protection(
        &self,
        ns: &Namespace,
        asked: &Protection,
    ) -> Result<Protection, StoreError> {
        self.with_reserve(|cat| {
            if let Some(recorded) = cat.folder_protection(ns.sender_id, &ns.folder)? {
                return Ok(recorded);
            }
            let fixed = if cat.folder_known(ns.sender_id, &ns.folder)? {
                Protection::Plain
            } else {
                *asked
            };
            cat.record_folder_protection(ns.sender_id, &ns.folder, &fixed, now_ms())?;
            Ok(fixed)
        })
    }

    /// The protection of each folder of the sender `sender_id` that has
    /// one recorded, by folder name (the others are plain).
    pub(crate) fn folder_protections(
        &self,
        sender_id: i64,
    ) -> Result<Vec<(String, Protection)>, StoreError> {
        self.catalog().folder_protections(sender_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::fixture;
    use super::*;

    const ENCRYPTED: Protection = Protection::Encrypted { key: [0xab; 32] };

    #[test]
    fn a_folder_is_fixed_by_its_first_run_and_survives_a_reopen() {
        let (dir, store, ns) = fixture();
        let sender = store.sender_by_name(&ns.sender).unwrap().unwrap();
        assert_eq!(
            store.recorded_protection(&sender, &ns.folder).unwrap(),
            None
        );
        assert_eq!(
            store.folder_protection(&ns.sender, &ns.folder).unwrap(),
            Protection::Plain
        );
        assert_eq!(store.fix_protection(&ns, &ENCRYPTED).unwrap(), ENCRYPTED);
        // Fixed: another mode asked later gets the recorded one back.
        let write_only = Protection::WriteOnly { key: [1; 32] };
        assert_eq!(store.fix_protection(&ns, &write_only).unwrap(), ENCRYPTED);
        assert_eq!(
            store.fix_protection(&ns, &Protection::Plain).unwrap(),
            ENCRYPTED
        );
        let root = store.root().to_owned();
        drop(store);
        let store = Store::open(&root).unwrap();
        assert_eq!(
            store.folder_protection(&ns.sender, &ns.folder).unwrap(),
            ENCRYPTED
        );
        assert_eq!(
            store.recorded_protection(&sender, &ns.folder).unwrap(),
            Some(ENCRYPTED)
        );
        drop(store);
        let read_only = Store::open_read_only(&root).unwrap();
        assert_eq!(
            read_only.folder_protection(&ns.sender, &ns.folder).unwrap(),
            ENCRYPTED
        );
        drop(dir);
    }

    #[test]
    fn a_folder_sent_before_protection_existed_is_plain() {
        let (_dir, store, ns) = fixture();
        store.begin_run(&ns).unwrap();
        let sender = store.sender_by_name(&ns.sender).unwrap().unwrap();
        assert_eq!(
            store.recorded_protection(&sender, &ns.folder).unwrap(),
            Some(Protection::Plain)
        );
        assert_eq!(
            store.fix_protection(&ns, &ENCRYPTED).unwrap(),
            Protection::Plain
        );
        // Another folder of the same sender is new.
        let pics = Name::new("pics").unwrap();
        assert_eq!(store.recorded_protection(&sender, &pics).unwrap(), None);
    }

    #[test]
    fn a_catalog_no_receiver_upgraded_reads_as_plain() {
        let (_dir, store, ns) = fixture();
        store.begin_run(&ns).unwrap();
        let root = store.root().to_owned();
        store
            .catalog()
            .conn()
            .execute_batch("DROP TABLE folder_protection;")
            .unwrap();
        drop(store);
        let read_only = Store::open_read_only(&root).unwrap();
        assert_eq!(
            read_only.folder_protection(&ns.sender, &ns.folder).unwrap(),
            Protection::Plain
        );
    }

    #[test]
    fn modes_are_shown_with_a_short_key_id() {
        assert_eq!(describe(&Protection::Plain), "plain");
        assert_eq!(describe(&ENCRYPTED), "encrypted with key abababababab…");
        let w = Protection::WriteOnly { key: [0x01; 32] };
        assert_eq!(describe(&w), "write-only with key 010101010101…");
        assert_eq!(mode_name(&w), "write-only");
    }
}
