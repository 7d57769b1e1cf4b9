//! Registering senders and naming their folders' namespaces: a device id
//! belongs to one sender name, and a name to one device.

use ferry_proto::Name;

use super::catalog::{self, Catalog};
use super::{now_ms, Namespace, SenderRecord, Store, StoreError};

impl Store {
    fn sender_record(
        &self,
        cat: &Catalog,
        row: catalog::SenderRow,
    ) -> Result<SenderRecord, StoreError> {
        let name = Name::new(row.name).map_err(|e| cat.corrupt(e.to_string()))?;
        Ok(SenderRecord {
            id: row.id,
            device: row.device,
            name,
        })
    }

    /// The sender with this device id, if known.
    pub fn sender_by_device(&self, device: &str) -> Result<Option<SenderRecord>, StoreError> {
        let cat = self.catalog();
        cat.sender_by_device(device)?
            .map(|r| self.sender_record(&cat, r))
            .transpose()
    }

    /// The sender with this name, if known.
    pub fn sender_by_name(&self, name: &Name) -> Result<Option<SenderRecord>, StoreError> {
        let cat = self.catalog();
        cat.sender_by_name(name.as_str())?
            .map(|r| self.sender_record(&cat, r))
            .transpose()
    }

    /// Registers a sender. Idempotent for the same device and name;
    /// [`StoreError::NameTaken`] if the name belongs to another device,
    /// [`StoreError::WrongName`] if the device has another name.
    pub fn add_sender(&self, device: &str, name: &Name) -> Result<SenderRecord, StoreError> {
        let cat = self.catalog();
        if let Some(row) = cat.sender_by_device(device)? {
            let existing = self.sender_record(&cat, row)?;
            if existing.name == *name {
                return Ok(existing);
            }
            return Err(StoreError::WrongName {
                device: device.to_owned(),
                registered: existing.name,
            });
        }
        if let Some(row) = cat.sender_by_name(name.as_str())? {
            return Err(StoreError::NameTaken {
                name: name.clone(),
                device: row.device,
            });
        }
        let id = cat.insert_sender(device, name.as_str(), now_ms())?;
        Ok(SenderRecord {
            id,
            device: device.to_owned(),
            name: name.clone(),
        })
    }

    /// True if `sender` has sent `folder` before (it has a run of it).
    pub fn folder_known(&self, sender: &SenderRecord, folder: &Name) -> Result<bool, StoreError> {
        self.catalog().folder_known(sender.id, folder)
    }

    /// The namespace of `folder` of `sender`.
    pub fn namespace(&self, sender: &SenderRecord, folder: &Name) -> Namespace {
        Namespace {
            sender_id: sender.id,
            sender: sender.name.clone(),
            folder: folder.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[test]
    fn sender_names_belong_to_one_device() {
        let (_dir, store, ns) = fixture();
        let lap = Name::new("lap").unwrap();
        let again = store.add_sender("dev-1", &lap).unwrap();
        assert_eq!(again.id, ns.sender_id);
        let err = store.add_sender("dev-2", &lap).unwrap_err();
        assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
        let err = store
            .add_sender("dev-1", &Name::new("other").unwrap())
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongName { .. }), "{err}");
        assert_eq!(store.sender_by_device("dev-1").unwrap().unwrap().name, lap);
        assert_eq!(store.sender_by_name(&lap).unwrap().unwrap().device, "dev-1");
        assert!(store.sender_by_device("dev-2").unwrap().is_none());
    }
}
