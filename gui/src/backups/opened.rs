//! A protected folder's objects opened for the Backups view: the headers
//! of a tree (what the browser lists, and the objects that did not open,
//! in words) and the versions of one object with their real size, time
//! and mode.

use ferry_agent::reader::sealed::{self, Opened};
use ferry_agent::reader::{Client, RemoteTree};
use ferry_proto::seal::FolderSecret;
use ferry_proto::VersionInfo;

/// The headers of `tree`'s objects (asked for whole), and each object that
/// could not be served or opened, in words.
pub async fn headers(
    client: &Client,
    secret: &FolderSecret,
    tree: RemoteTree,
) -> (Vec<Opened>, Vec<String>) {
    let (opened, unopened) = sealed::open_headers(&client.fetcher(), secret, tree.entries).await;
    let mut failed: Vec<String> = tree
        .not_served
        .iter()
        .map(|n| format!("{}: the receiver cannot serve it: {}", n.path, n.reason))
        .collect();
    failed.extend(unopened.iter().map(|u| {
        format!(
            "{}: {}",
            u.version.path,
            ferry_agent::chain::chain(&u.error)
        )
    }));
    (opened, failed)
}

/// A protected folder's versions of one object with their headers opened:
/// the real path, kind, size, time and mode (a version that does not open
/// is shown as stored), newest first.
pub async fn versions(
    client: &Client,
    secret: &FolderSecret,
    versions: Vec<VersionInfo>,
) -> Vec<VersionInfo> {
    let (opened, unopened) = sealed::open_headers(&client.fetcher(), secret, versions).await;
    let mut out: Vec<VersionInfo> = opened
        .into_iter()
        .map(|o| {
            let real = sealed::dir_entry(&o);
            VersionInfo {
                path: real.path,
                kind: real.kind,
                mtime_ns: real.mtime_ns,
                mode: real.mode,
                ..o.version
            }
        })
        .collect();
    out.extend(unopened.into_iter().map(|u| u.version));
    out.sort_by_key(|v| std::cmp::Reverse(v.id));
    out
}
