//! The senders' table: looking a sender up by device or name, registering one.

use rusqlite::{params, OptionalExtension};

use super::Catalog;
use crate::store::error::StoreError;

/// A sender's row.
pub(crate) struct SenderRow {
    pub id: i64,
    pub device: String,
    pub name: String,
}

impl Catalog {
    fn sender_where(&self, column: &str, value: &str) -> Result<Option<SenderRow>, StoreError> {
        let sql = format!("SELECT id, device, name FROM senders WHERE {column} = ?1");
        self.conn
            .query_row(&sql, [value], |r| {
                Ok(SenderRow {
                    id: r.get(0)?,
                    device: r.get(1)?,
                    name: r.get(2)?,
                })
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The sender with this device id.
    pub fn sender_by_device(&self, device: &str) -> Result<Option<SenderRow>, StoreError> {
        self.sender_where("device", device)
    }

    /// The sender with this name.
    pub fn sender_by_name(&self, name: &str) -> Result<Option<SenderRow>, StoreError> {
        self.sender_where("name", name)
    }

    /// Inserts a sender; the caller has checked that neither the device nor
    /// the name exists.
    pub fn insert_sender(&self, device: &str, name: &str, now_ms: i64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO senders (device, name, added_ms) VALUES (?1, ?2, ?3)",
                params![device, name, now_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }
}
