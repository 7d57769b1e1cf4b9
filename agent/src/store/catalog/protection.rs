//! The folders' protection table: each folder's mode (`plain`,
//! `encrypted`, `write-only`) and key id, recorded once.

use ferry_proto::{Name, Protection};
use rusqlite::{params, OptionalExtension, Row};

use super::Catalog;
use crate::store::error::StoreError;

/// A row's mode and key as stored.
fn encode(protection: &Protection) -> (&'static str, Option<&[u8]>) {
    match protection {
        Protection::Plain => ("plain", None),
        Protection::Encrypted { key } => ("encrypted", Some(key.as_slice())),
        Protection::WriteOnly { key } => ("write-only", Some(key.as_slice())),
    }
}

/// A row's mode and key read back; `Err` says what is wrong with it.
fn decode(mode: &str, key: Option<Vec<u8>>) -> Result<Protection, String> {
    let id = |key: Option<Vec<u8>>| {
        key.as_deref()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| format!("a {mode} folder's key id is not 32 bytes"))
    };
    match mode {
        "plain" => Ok(Protection::Plain),
        "encrypted" => Ok(Protection::Encrypted { key: id(key)? }),
        "write-only" => Ok(Protection::WriteOnly { key: id(key)? }),
        other => Err(format!("unknown folder protection mode {other:?}")),
    }
}

fn mode_and_key(r: &Row<'_>) -> rusqlite::Result<(String, Option<Vec<u8>>)> {
    Ok((r.get(0)?, r.get(1)?))
}

impl Catalog {
    /// True if the catalog has the protection table (a catalog no current
    /// receiver has opened for writing may not).
    pub(super) fn has_protection_table(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'folder_protection'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    fn decoded(
        &self,
        row: Option<(String, Option<Vec<u8>>)>,
    ) -> Result<Option<Protection>, StoreError> {
        row.map(|(mode, key)| decode(&mode, key).map_err(|detail| self.corrupt(detail)))
            .transpose()
    }

    /// The protection recorded for `folder` of the sender `sender_id`.
    pub fn folder_protection(
        &self,
        sender_id: i64,
        folder: &Name,
    ) -> Result<Option<Protection>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT mode, key FROM folder_protection WHERE sender_id = ?1 AND folder = ?2",
                params![sender_id, folder.as_str()],
                mode_and_key,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        self.decoded(row)
    }

    /// The protection recorded for `folder` of the sender named `sender`.
    pub fn folder_protection_by_name(
        &self,
        sender: &Name,
        folder: &Name,
    ) -> Result<Option<Protection>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT p.mode, p.key FROM folder_protection p JOIN senders s ON s.id = p.sender_id
                 WHERE s.name = ?1 AND p.folder = ?2",
                params![sender.as_str(), folder.as_str()],
                mode_and_key,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        self.decoded(row)
    }

    /// Every protection recorded for the sender `sender_id`, by folder.
    pub fn folder_protections(
        &self,
        sender_id: i64,
    ) -> Result<Vec<(String, Protection)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT folder, mode, key FROM folder_protection WHERE sender_id = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([sender_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(folder, mode, key)| {
                let protection = decode(&mode, key).map_err(|detail| self.corrupt(detail))?;
                Ok((folder, protection))
            })
            .collect()
    }

    /// Records `protection` for `folder` of the sender `sender_id`; a row
    /// already there stays as it is (a folder's protection is fixed).
    pub fn record_folder_protection(
        &self,
        sender_id: i64,
        folder: &Name,
        protection: &Protection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (mode, key) = encode(protection);
        self.conn
            .execute(
                "INSERT OR IGNORE INTO folder_protection (sender_id, folder, mode, key, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sender_id, folder.as_str(), mode, key, now_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn every_mode_reads_back_and_a_bad_row_is_named() {
        for p in [
            Protection::Plain,
            Protection::Encrypted { key: [1; 32] },
            Protection::WriteOnly { key: [2; 32] },
        ] {
            let (mode, key) = encode(&p);
            assert_eq!(decode(mode, key.map(<[u8]>::to_vec)), Ok(p));
        }
        assert!(decode("encrypted", Some(vec![1; 5])).is_err());
        assert!(decode("encrypted", None).is_err());
        assert!(decode("rot13", None).unwrap_err().contains("rot13"));
    }
}
