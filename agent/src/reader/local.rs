//! A store on this machine read instead of asking a receiver (`--store`):
//! opened read-only, its sender and folder found, and questions answered by
//! the receiver's own request handlers.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_proto::{Name, Protection, Request};

use super::AskError;
use crate::receiver::requests::{self, Answer, Ctx};
use crate::store::{HistoryError, Store};

/// A store on this machine to read instead of asking a receiver (`--store`):
/// one made by `ferry send --store`, or a receiver's, read by its admin.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// The store's directory.
    pub root: PathBuf,
    /// The sender whose folder is read.
    pub name: Name,
    /// The folder; `None`: the sender's only folder in the store.
    pub folder: Option<Name>,
}

/// Why a store on this machine could not be opened for reading
/// ([`super::Client::open_store`]).
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    /// The local store cannot be read.
    #[error(transparent)]
    Store(#[from] HistoryError),
    /// The local store has no sender of that name.
    #[error("the store {} has no sender named {name} (it has: {known}); give --name", root.display())]
    UnknownSender {
        root: PathBuf,
        name: Name,
        known: String,
    },
    /// No folder was given and the sender does not have exactly one.
    #[error("{name} has {} in the store {}; give --folder", folder_list(folders), root.display())]
    WhichFolder {
        root: PathBuf,
        name: Name,
        /// The sender's folders in the store, by name.
        folders: Vec<Name>,
    },
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
}

fn folder_list(folders: &[Name]) -> String {
    match folders {
        [] => "sent nothing".into(),
        _ => {
            let names: Vec<&str> = folders.iter().map(Name::as_str).collect();
            format!("the folders {}", names.join(", "))
        }
    }
}

/// Opens the store and finds the namespace (blocking).
pub(super) fn open(local: LocalStore) -> Result<Ctx, OpenStoreError> {
    let store = Store::open_for_reading(&local.root)?;
    let runs = store.runs(None).map_err(HistoryError::from)?;
    let sender = store
        .sender_by_name(&local.name)
        .map_err(HistoryError::from)?;
    let Some(sender) = sender else {
        let mut known: Vec<&str> = runs.iter().map(|r| r.sender.as_str()).collect();
        known.sort_unstable();
        known.dedup();
        return Err(OpenStoreError::UnknownSender {
            root: local.root,
            name: local.name,
            known: known.join(", "),
        });
    };
    let folder = match local.folder {
        Some(folder) => folder,
        None => {
            let mut folders: Vec<Name> = runs
                .into_iter()
                .filter(|r| r.sender == sender.name)
                .map(|r| r.folder)
                .collect();
            folders.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            folders.dedup();
            match <[Name; 1]>::try_from(folders) {
                Ok([only]) => only,
                Err(folders) => {
                    return Err(OpenStoreError::WhichFolder {
                        root: local.root,
                        name: sender.name,
                        folders,
                    });
                }
            }
        }
    };
    let ns = store.namespace(&sender, &folder);
    Ok(Ctx {
        store: Arc::new(store),
        ns,
    })
}

/// Answers `request` from the local store, as a receiver would.
pub(super) async fn ask(ctx: &Arc<Ctx>, request: Request) -> Result<Answer, AskError> {
    let ctx = ctx.clone();
    crate::tasks::blocking(move || requests::answer(&ctx, request))
        .await?
        .map_err(|message| AskError::Unanswered { message })
}

/// The folder's protection, as the store recorded it.
pub(super) async fn protection(ctx: &Arc<Ctx>) -> Result<Protection, AskError> {
    match ask(ctx, Request::Protection).await? {
        Answer::Protection(p) => Ok(p),
        _ => Err(AskError::OtherAnswer {
            asked: "protection",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_folder_names_the_folders_or_says_none_was_sent() {
        let name = Name::new("ann".to_string()).unwrap();
        let none = OpenStoreError::WhichFolder {
            root: PathBuf::from("/s"),
            name: name.clone(),
            folders: Vec::new(),
        };
        assert_eq!(
            none.to_string(),
            "ann has sent nothing in the store /s; give --folder"
        );
        let two = OpenStoreError::WhichFolder {
            root: PathBuf::from("/s"),
            name,
            folders: vec![
                Name::new("docs".to_string()).unwrap(),
                Name::new("pics".to_string()).unwrap(),
            ],
        };
        assert_eq!(
            two.to_string(),
            "ann has the folders docs, pics in the store /s; give --folder"
        );
    }
}
