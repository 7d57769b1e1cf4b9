//! # The Ferry protocol, version 1 (`ferry/1`)
//!
//! Ferry moves files from a **sender** to a **receiver** over QUIC. This crate
//! is the protocol's specification and its only implementation of the wire
//! format: message types ([`Message`]), validated paths ([`RelPath`], [`Name`])
//! and framing ([`frame`]). It does no I/O.
//!
//! ## Transport and trust
//!
//! - QUIC with TLS 1.3; the ALPN is [`ALPN`] (`ferry/1`). A new, incompatible
//!   protocol gets a new ALPN, so old and new peers fail the handshake cleanly.
//! - Both sides present a self-signed certificate. A peer's **device id** is the
//!   blake3 hash of its certificate's public key (SubjectPublicKeyInfo). There
//!   is no CA: the sender pins the receiver's id, the receiver admits only
//!   senders whose id it knows.
//! - A sender the receiver does not know may **pair**: its `Hello` carries
//!   [`pairing_proof`] of the shared secret over keying material exported from
//!   this very TLS session ([`PAIRING_EXPORTER_LABEL`]), so a proof cannot be
//!   replayed on another connection or relayed by a man in the middle.
//!
//! ## Framing
//!
//! Every stream carries frames: a 4-byte big-endian length, then that many
//! bytes of postcard encoding one [`Message`]. A length over
//! [`frame::MAX_FRAME`] is an error before anything is allocated. `Data`
//! frames carry at most [`MAX_DATA`] bytes of content.
//!
//! ## Participants and order of messages
//!
//! **Control stream** — the first bidirectional stream, opened by the sender:
//!
//! ```text
//! S→R  Hello { protocol, name, folder, pairing?, agent, last_run? }
//!    | HelloProtected { hello, protection }        a sealed folder (see "Sealed folders")
//! R→S  Welcome { run_id, paired, max_streams, resync }  admitted, run opened
//!    | Busy { retry_after_ms }                        too many senders: retry later
//!    | Refused { code, message }                      unknown sender, bad secret, ...
//! ... file streams run ...
//! S→R  Delete { paths }          (zero or more times)
//! R→S  Deleted { failed }
//! S→R  Finish(RunReport)         after every file stream has been answered
//! R→S  Committed { run_id }      the run is recorded in the receiver's catalog
//! ```
//!
//! **File streams** — one bidirectional stream per entry, opened by the sender
//! after `Welcome`, at most `max_streams` at once:
//!
//! ```text
//! S→R  Entry { path, kind, mtime_ns, mode }
//!      kind = File { size, Inline }:
//!          S→R  Data* , End { hash } | Abort { reason }
//!      kind = File { size, Offer { hash } }:
//!          R→S  Stored                    the receiver already holds it: done
//!             | Want, then S→R Data*, End { hash } | Abort { reason }
//!      kind = File { size, Chunked { base? } }:
//!          R→S  Go { base, resume? }
//!          S→R  Keep { len }?             only if resume was offered and is right
//!          S→R  (Data | DataZstd | Copy { start, count })* , End { hash } | Abort
//!      kind = File { size, ChunkedUpTo { base? } }:
//!          as Chunked; `size` is an upper bound, the content is what
//!          arrives before End (a sealed folder's chunked object)
//!      kind = Dir | Symlink { target }:   nothing follows
//! R→S  Stored | Failed { code, message }
//! ```
//!
//! Wherever `Data` may appear, `DataZstd` may too: the same content,
//! zstd-compressed, at most [`MAX_DATA`] bytes once decompressed.
//!
//! **Chunked content** is for large files. The sender cuts the file with
//! FastCDC (8/32/128 KiB min/avg/max) and sends each chunk as one `Data` or
//! `DataZstd` message, or, for chunks of the `base` (a version of this
//! sender's folder it sent before: the same path, or another one for a
//! rename or copy), `Copy { start, count }` naming them by their index in
//! the base's chunk list. The receiver keeps each stored version's chunk list
//! (offset, length, blake3 of every chunk), rebuilds the file in staging from
//! the base's bytes (checking each copied chunk's hash) and the new chunks,
//! and verifies the whole file's hash as for any other content. `Go.base` is
//! false when it does not hold the base; the sender then sends every chunk.
//!
//! A chunked transfer that is interrupted (connection lost, either side
//! killed) leaves its staging file and chunk list on the receiver, made
//! durable every few MiB. When the same path is sent again, `Go.resume`
//! offers the verified prefix; if the sender's file starts with the same
//! bytes it answers `Keep` and sends only the rest.
//!
//! **Bundle streams** carry many small entries on one stream, so that a
//! folder of small files costs neither a stream each nor a compression
//! context each:
//!
//! ```text
//! S→R  Bundle
//! then, for each entry, without waiting for answers:
//! S→R  Entry { path, kind, mtime_ns, mode }
//!      kind = File { size, Inline }, size ≤ MAX_BUNDLED:
//!          S→R  (Data | Zstream)* , End { hash }
//!      kind = Dir | Symlink { target }:   nothing follows
//! R→S  Stored | Failed { code, message }, one per entry, in order
//! ```
//!
//! The sender ends a bundle by finishing its side of the stream. `Zstream`
//! pieces are consecutive parts of one zstd stream that lives as long as the
//! bundle (each flushed, so it decodes whole, to at most [`MAX_DATA`] bytes):
//! text compresses against everything sent before it on the stream, as with
//! one compressed connection. An entry that fails (quota, disk full, wrong
//! hash) is answered `Failed` and the bundle goes on; a message that breaks
//! these rules ends the bundle: its entry is answered `Failed { BadRequest }`
//! and the receiver stops reading the stream.
//!
//! `Stored` means the entry is durable on the receiver (content fsynced and
//! renamed into place, the previous version archived). The sender records an
//! entry as sent only after `Stored`.
//!
//! **Read-only sessions** — history, versions and restore. The control
//! stream opens with [`Open`] instead of `Hello`; such a session never pairs
//! (an unknown device is refused `UnknownSender`), never opens a run and never
//! changes the store. The receiver identifies the sender by the device id of
//! the TLS session alone and answers only from that sender's namespace, for
//! the folder named in `Open`; a name in `Open` that is not the device's
//! registered name is refused `WrongName`.
//!
//! ```text
//! S→R  Open { protocol, name, folder, agent }
//! R→S  Opened { sender } | Busy { retry_after_ms } | Refused { code, message }
//! then, one at a time:
//! S→R  Request(Runs | Versions { path } | Tree { at, under } | List { at, dir })
//! R→S  RunList(..)* | VersionList(..)* NotServed(..)* | DirList(..)*,
//!      then ListEnd { run }
//! S→R  Request(Protection)
//! R→S  FolderProtection(protection)   (Plain for a folder never sent)
//!    | Refused { BadRequest, .. }    (e.g. a run of another folder or sender)
//! ```
//!
//! Lists are split into messages of at most [`MAX_LIST_BYTES`] of items.
//! `Tree` gives the folder as of [`At::Latest`], a run ([`At::Run`]) or a time
//! ([`At::Time`]: the last run that had ended by then), restricted to the
//! paths `under` if any; `ListEnd.run` names the run it resolved to. A tree
//! version the receiver cannot serve (a damaged catalog row, bytes not kept
//! or recorded outside the store) is not in the `VersionList`s but in a
//! `NotServed` with the reason; the client reports it and restores the rest.
//!
//! `List` is for browsing a large folder one directory at a time: it gives
//! the immediate children of `dir` (`None`: the folder's root) as of a point,
//! as [`DirEntry`]s in bytewise name order across the `DirList` messages,
//! each with its kind (a file's size and hash, a symlink's target), mtime,
//! mode, and the version id and run that `Versions` and `Fetch` use; a child
//! directory that was not stored itself but has entries below it is listed
//! with no version. `ListEnd.run` names the run the point resolved to. A
//! directory that does not exist at that point, or a file, has no children:
//! the answer is an empty list, not a refusal.
//!
//! **Restore streams** — one bidirectional stream per file, opened by the
//! client of a read-only session:
//!
//! ```text
//! S→R  Fetch { version }       a version id from a VersionList
//! R→S  Data* , End { hash }    the stored bytes, at most MAX_DATA per frame
//!    | Failed { code, message }   not a file of this sender's folder, or gone
//! ```
//!
//! The client checks the content against the hash of the listing while
//! writing it, and discards it on a mismatch.
//!
//! ## Sealed folders
//!
//! A folder whose [`Protection`] is `Encrypted` or `WriteOnly` is sealed on
//! the sender: its control stream opens with `HelloProtected` (the
//! protection names the folder key's id, which the receiver pins: a folder
//! keeps its mode and key for good), and every file, directory and symlink
//! travels as one regular-file `Entry` at an opaque path (`hh/` and 30 hex
//! digits), mode `0600`, mtime 0, whose content is a sealed object: the real
//! path, kind, metadata and content, padded and encrypted to the folder key.
//! The receiver stores, versions and serves objects as files and can open
//! none; a reader with the key opens them after `Fetch`. The construction
//! (keys, opaque paths, the object format, what is authenticated and padded,
//! what the receiver still sees) is specified in [`seal`].
//!
//! ## Paths and names
//!
//! Paths are relative, `/`-separated bytes (any bytes Linux allows in a file
//! name), with no empty, `.` or `..` component, no NUL, at most
//! [`MAX_PATH_LEN`] bytes. They are validated when decoded: a message carrying
//! a bad path does not decode. Sender and folder names are [`Name`]s: one
//! component of UTF-8 that does not start with `.`. A name new to the
//! receiver (a sender registering, a folder's first run) must also be
//! printable and in its plain (NFKC) form ([`Name::check_new`]), else it is
//! refused `BadName`; names registered before that rule keep working.
//!
//! ## Revoked senders and pairing switched off
//!
//! The receiver's admin can revoke a registered sender (`ferry senders
//! revoke`): its `Hello` and `Open` are then answered `Refused { Revoked }`
//! (code appended in this version; a sender treats it, like every refusal
//! but `ShuttingDown`, as final), and a connection it has open is closed
//! with a reason naming the revocation. With pairing switched off (`ferry
//! senders pairing off`), a device that is neither registered nor listed is
//! refused `UnknownSender`, whatever pairing proof it offers.
//!
//! ## Errors
//!
//! - A frame that does not decode, or a message out of order, ends the stream
//!   (`Failed { BadRequest }` on a file stream, `Refused { BadRequest }` on the
//!   control stream) and nothing of it is stored.
//! - `Failed { HashMismatch | SizeMismatch | Aborted }`: the content was
//!   discarded; the sender retries in a later run.
//! - `Failed { Io }`: the receiver could not store (disk full, ...); nothing
//!   partial is visible; the sender retries later.
//!
//! ## Layout
//!
//! - [`path`]: [`RelPath`] and [`Name`].
//! - [`message`]: [`Message`] and its parts.
//! - [`request`]: the payloads of read-only sessions ([`Open`], [`Request`],
//!   [`RunInfo`], [`VersionInfo`], [`DirEntry`]).
//! - `types`: the small types messages and requests share ([`Hash`],
//!   [`RunReport`]), re-exported here.
//! - [`seal`]: sealed objects of encrypted and write-only folders (the
//!   construction's spec, folder keys, sealing and opening).
//! - [`frame`]: length-prefixed framing and a tokio-util codec (feature
//!   `codec`).
//! - `fuzz_support` (hidden, feature `fuzz`): the harnesses of the fuzz
//!   targets in `proto/fuzz/` and `agent/fuzz/`, in three modules
//!   (generators, property checks, seed corpus), also run a bounded number
//!   of times by the unit tests.

pub mod frame;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz_support;
pub mod message;
pub mod path;
pub mod request;
pub mod seal;
mod types;

pub use frame::{FrameError, MAX_FRAME};
pub use message::*;
pub use path::{Name, NameRuleError, PathError, RelPath, MAX_COMPONENT_LEN, MAX_PATH_LEN};
pub use request::{
    At, DirEntry, NotServed, Open, Request, RunInfo, VersionInfo, VersionKind, MAX_LIST_BYTES,
};
pub use types::{Hash, Protection, RunReport};

/// The QUIC ALPN of Ferry's protocol (its version is [`PROTOCOL_VERSION`],
/// carried in [`Hello`] and [`Open`], so that a receiver can say which
/// versions disagree rather than fail the TLS handshake).
pub const ALPN: &[u8] = b"ferry/1";
/// The protocol version carried in [`Hello`] and [`Open`]. Version 2 added
/// `Hello::last_run` and `Welcome::resync`.
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest content carried by one `Data` frame.
pub const MAX_DATA: usize = 256 * 1024;
/// Largest file a bundle stream carries (larger ones get a stream each).
pub const MAX_BUNDLED: u64 = 128 * 1024;
/// TLS exporter label for the pairing proof.
pub const PAIRING_EXPORTER_LABEL: &[u8] = b"EXPORTER-ferry-pairing-v1";
/// Length of the exported keying material the pairing proof is computed over.
pub const PAIRING_EXPORTER_LEN: usize = 32;

/// The pairing proof: a blake3 MAC, keyed by the pairing secret, over keying
/// material exported from the current TLS session.
pub fn pairing_proof(secret: &[u8], exported: &[u8; PAIRING_EXPORTER_LEN]) -> Hash {
    let key = blake3::derive_key("ferry 2026 pairing secret v1", secret);
    *blake3::keyed_hash(&key, exported).as_bytes()
}

/// Compares two proofs in constant time.
pub fn proofs_match(a: &Hash, b: &Hash) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_proof_depends_on_secret_and_session() {
        let a = pairing_proof(b"secret", &[1; 32]);
        assert!(proofs_match(&a, &pairing_proof(b"secret", &[1; 32])));
        assert!(!proofs_match(&a, &pairing_proof(b"secret", &[2; 32])));
        assert!(!proofs_match(&a, &pairing_proof(b"Secret", &[1; 32])));
    }
}
