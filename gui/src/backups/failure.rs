//! A question the Backups view could not get answered, in plain words:
//! the receiver unreachable (the local copies may stand in), refused, or a
//! store that cannot tell which sender or folder to read, named by the
//! sender form's fields rather than the command line's flags.

use ferry_agent::reader::{AskError, ClientError, ConnectError, FetchError, OpenStoreError};
use ferry_proto::{Name, RefuseCode};

use super::Origin;

/// Why a question could not be answered, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The receiver could not be reached (the local copies may stand in).
    pub unreachable: bool,
}

impl Failure {
    pub(crate) fn plain(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            unreachable: false,
        }
    }
}

/// Puts `e` in plain words.
pub fn failure(origin: &Origin, e: &ClientError) -> Failure {
    let chain = ferry_agent::chain::chain(e);
    let place = match origin {
        Origin::Receiver(r) => format!("{}:{}", r.host, r.port),
        _ => String::new(),
    };
    let refused = match e {
        ClientError::Connect(ConnectError::Refused { code, message })
        | ClientError::Ask(AskError::Refused { code, message }) => Some((*code, message)),
        _ => None,
    };
    match (e, refused) {
        (
            ClientError::Connect(
                ConnectError::Transport(_)
                | ConnectError::Connection(_)
                | ConnectError::Busy { .. },
            )
            | ClientError::Fetch(FetchError::Connection(_)),
            _,
        ) => Failure {
            message: format!("Cannot reach the receiver at {place}: {chain}"),
            unreachable: true,
        },
        (_, Some((RefuseCode::UnknownSender, message))) => Failure::plain(format!(
            "The receiver at {place} does not admit this sender (it was revoked, or has \
             not paired yet): {message}"
        )),
        (_, Some((_, message))) => {
            Failure::plain(format!("The receiver at {place} refused: {message}"))
        }
        (ClientError::OpenStore(e), _) => Failure::plain(store_failure(e).unwrap_or(chain)),
        _ => Failure::plain(chain),
    }
}

/// A store that cannot tell which folder to read, in the launcher's words
/// (the command line's say which flag to give); `None`: as it is.
fn store_failure(e: &OpenStoreError) -> Option<String> {
    match e {
        OpenStoreError::WhichFolder {
            root,
            name,
            folders,
        } if folders.is_empty() => Some(format!(
            "{name} has sent nothing into the store {}: check \"Name\" in the sender form",
            root.display()
        )),
        OpenStoreError::WhichFolder {
            root,
            name,
            folders,
        } => {
            let names: Vec<&str> = folders.iter().map(Name::as_str).collect();
            Some(format!(
                "{name} has several folders in the store {} ({}): give the one to show as \
                 \"Source directory\" in the sender form (a folder is named after its source \
                 directory)",
                root.display(),
                names.join(", ")
            ))
        }
        OpenStoreError::UnknownSender { root, name, known } => Some(format!(
            "The store {} has no sender named {name} (it has: {known}): give the sender's \
             name as \"Name\" in the sender form",
            root.display()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_agent::reader::LocalStore;
    use std::path::PathBuf;

    #[test]
    fn a_store_that_cannot_tell_which_folder_names_the_form_fields_not_flags() {
        let name = |s: &str| Name::new(s.to_string()).unwrap();
        let origin = Origin::Store(LocalStore {
            root: PathBuf::from("/s"),
            name: name("ann"),
            folder: None,
        });
        let which = |folders| {
            ClientError::OpenStore(OpenStoreError::WhichFolder {
                root: PathBuf::from("/s"),
                name: name("ann"),
                folders,
            })
        };
        let two = failure(&origin, &which(vec![name("docs"), name("pics")])).message;
        assert!(two.contains("(docs, pics)"), "{two}");
        assert!(
            two.contains("\"Source directory\" in the sender form"),
            "{two}"
        );
        let none = failure(&origin, &which(Vec::new())).message;
        assert!(none.contains("has sent nothing"), "{none}");
        let unknown = ClientError::OpenStore(OpenStoreError::UnknownSender {
            root: PathBuf::from("/s"),
            name: name("bob"),
            known: "ann".into(),
        });
        let unknown = failure(&origin, &unknown).message;
        assert!(unknown.contains("(it has: ann)"), "{unknown}");
        for said in [two, none, unknown] {
            assert!(!said.contains("--"), "a command-line flag: {said}");
        }
    }
}
