//! A sealed folder's entries, the sender's side (`--protect encrypted` or
//! `write-only`): every file, directory and symlink travels as one regular
//! file at its opaque path, mode `0600`, mtime 0, whose content is the
//! sealed object of the entry ([`ferry_proto::seal`]): its real path and
//! metadata, then its content. The receiver stores objects as it stores
//! files and learns nothing it could read.
//!
//! This is the one seam between plain and sealed sending: [`Sealing`] turns
//! a planned entry into its wire header and sealed content; bundles frame
//! the objects it seals in memory ([`Sealing::seal_whole`]), and
//! [`send_entry`] sends one on a stream of its own. A large file travels
//! as a chunked object ([`super::sealed_delta`]): against the previous
//! object of its path (or of the path it was renamed from), compressed
//! before it is sealed, resumed where an interrupted transfer stopped. Small
//! objects travel whole (never offered by hash: a metadata change changes
//! the sealed header). The index keeps real paths and real metadata, as for
//! a plain folder, and for a chunked object its piece list under its opaque
//! path. The `hh/` directories are not sent: the receiver makes
//! the parents of what it stores itself. Deletions go by opaque paths, one
//! object each (the plan lists a directory's contents before it).

use std::sync::Arc;

use ferry_proto::seal::{FolderPublic, RunSealer, SealError, SealedHeader, SealedKind};
use ferry_proto::{frame, Content, Entry, EntryKind, Hash, Message, RelPath, MAX_DATA};

use super::file_stream::machine::{EntrySender, Offer};
use super::file_stream::{
    acknowledged, answer, stored_dir_or_symlink, stream_chunked, unless_stopped, SendEntryError,
    Sent, TransferContext,
};
use super::sealed_delta::SealedDeltaReader;
use super::source_file::{self, ContentBytes, FileStat, Opened};
use crate::chunk::Gear;
use crate::compress::CompressMode;
use crate::copies::{Copies, CopyWriter};
use crate::index::PlanItem;
use crate::link::Link;
use crate::scan::{ScanEntry, ScanKind, SourceDir};
use crate::stream::{Channel, StreamError};
use crate::tasks::blocking;

/// Mode of every object on the receiver.
pub const OBJECT_MODE: u32 = 0o600;

/// One run's sealing: the folder's public half (names objects) and the
/// run's key (seals them), shared by every entry of the run.
pub struct Sealing {
    public: FolderPublic,
    run: RunSealer,
    /// The folder's keyed chunker.
    gear: Arc<Gear>,
    /// When a small file's content is compressed before it is sealed.
    compress: CompressMode,
}

/// An entry sealed whole in memory, ready to frame.
#[derive(Debug)]
pub struct SealedObject {
    /// The wire header: the opaque path, a regular file of the object's size.
    pub entry: Entry,
    /// The object's bytes.
    pub object: Vec<u8>,
    /// The blake3 of `object`: what the receiver checks at `End`.
    pub hash: Hash,
}

impl SealedObject {
    /// Bytes of the object on the wire.
    pub fn len(&self) -> u64 {
        self.object.len() as u64
    }

    /// Appends the object's frames (`Entry`, `Data`, `End`) to `out`.
    pub fn frames(&self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        out.extend_from_slice(&frame::encode(&Message::Entry(self.entry.clone()))?);
        for piece in self.object.chunks(MAX_DATA) {
            out.extend_from_slice(&frame::data_header(piece.len())?);
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(&frame::encode(&Message::End { hash: self.hash })?);
        Ok(())
    }
}

/// The sealed header of `scanned`: with `file` (a file as opened), the open
/// file's metadata; without, as scanned (a directory or symlink has no
/// content).
pub fn header(scanned: &ScanEntry, file: Option<&FileStat>) -> SealedHeader {
    let kind = match &scanned.kind {
        ScanKind::File => SealedKind::File,
        ScanKind::Dir => SealedKind::Dir,
        ScanKind::Symlink { target } => SealedKind::Symlink {
            target: target.to_vec(),
        },
    };
    let (mode, mtime_ns, size) = match (file, &scanned.kind) {
        (Some(stat), _) => (stat.mode, stat.mtime_ns, stat.size),
        (None, ScanKind::File) => (scanned.mode, scanned.mtime_ns, scanned.size),
        (None, _) => (scanned.mode, scanned.mtime_ns, 0),
    };
    SealedHeader {
        path: scanned.path.clone(),
        kind,
        mode,
        mtime_ns,
        size,
    }
}

impl Sealing {
    /// A fresh run key for the folder `public` seals to.
    pub fn new(public: &FolderPublic) -> Result<Sealing, SealError> {
        Ok(Sealing {
            public: public.clone(),
            run: RunSealer::new(public)?,
            gear: Arc::new(Gear::seeded(public.chunker_seed())),
            compress: CompressMode::Off,
        })
    }

    /// This sealing, compressing small files' content as `mode` says
    /// (`Off` until told).
    pub fn compressing(self, mode: CompressMode) -> Sealing {
        Sealing {
            compress: mode,
            ..self
        }
    }

    /// The folder's public half.
    pub fn public(&self) -> &FolderPublic {
        &self.public
    }

    /// The run's key.
    pub fn run(&self) -> &RunSealer {
        &self.run
    }

    /// The folder's keyed chunker tables.
    pub fn gear(&self) -> Arc<Gear> {
        self.gear.clone()
    }

    /// Where the receiver keeps the objects of the entry at `path`.
    pub fn opaque_path(&self, path: &RelPath) -> RelPath {
        self.public.opaque_path(path)
    }

    /// `message` (the receiver's words about the object of the entry at
    /// `path`, as the summary shows it) with the object's opaque path in it
    /// replaced by the real one: a person reads the name they know.
    pub fn real_names(&self, message: &str, path: &str) -> String {
        match RelPath::from_bytes(path.as_bytes()) {
            Ok(real) => message.replace(&self.opaque_path(&real).to_string(), path),
            Err(_) => message.to_string(),
        }
    }

    /// The paths the receiver knows `paths` (real) by, in the same order.
    pub fn wire_paths(&self, paths: &[RelPath]) -> Vec<RelPath> {
        paths.iter().map(|p| self.opaque_path(p)).collect()
    }

    /// The wire header of the object of `path`, `len` bytes long.
    pub fn wire_entry(&self, path: &RelPath, len: u64) -> Entry {
        Entry {
            path: self.opaque_path(path),
            kind: EntryKind::File {
                size: len,
                content: Content::Inline,
            },
            mtime_ns: 0,
            mode: OBJECT_MODE,
        }
    }

    /// True if `item`'s object, as scanned, may travel in a bundle.
    pub fn fits(&self, entry: &ScanEntry) -> bool {
        RunSealer::object_len(&header(entry, None)).is_ok_and(|len| len <= ferry_proto::MAX_BUNDLED)
    }

    /// Seals `scanned` whole: a directory or symlink (`file` `None`, no
    /// content), or a file as opened (`file`) with its `content`.
    pub fn seal_whole(
        &self,
        scanned: &ScanEntry,
        file: Option<&FileStat>,
        content: &[u8],
    ) -> Result<SealedObject, SendEntryError> {
        let header = header(scanned, file);
        let packed = match header.kind {
            SealedKind::File => crate::compress::compress(content, self.compress),
            _ => None,
        };
        let object = match packed {
            // Compressed before it is sealed: the receiver could not.
            Some(packed) => self
                .run
                .packed_object(&header, &packed)
                .map_err(SendEntryError::Seal)?,
            None => {
                let len = RunSealer::object_len(&header).map_err(SendEntryError::Seal)?;
                let mut object = Vec::with_capacity(len as usize);
                let mut sealer = self.run.object(header).map_err(SendEntryError::Seal)?;
                sealer
                    .push(content, &mut object)
                    .map_err(SendEntryError::Seal)?;
                sealer.finish(&mut object).map_err(SendEntryError::Seal)?;
                object
            }
        };
        let hash = *blake3::hash(&object).as_bytes();
        Ok(SealedObject {
            entry: self.wire_entry(&scanned.path, object.len() as u64),
            object,
            hash,
        })
    }
}

/// What an entry on a stream of its own was, for the index once stored.
enum Real {
    Dir,
    Symlink(Vec<u8>),
    File {
        stat: FileStat,
        hash: Hash,
        copy: Option<CopyWriter>,
    },
}

/// An entry read for a stream of its own and sealed whole in memory (a
/// directory, a symlink, a small file); `None` for a large file, a chunked
/// object sealed as it is read.
type Prepared = Option<Box<(SealedObject, Real)>>;

/// Reads `scanned` (a small file whole, a large one only opened) and seals
/// what was read.
fn prepare(
    seal: &Sealing,
    source: &SourceDir,
    copies: Option<&Copies>,
    scanned: &ScanEntry,
) -> Result<Prepared, SendEntryError> {
    let (object, real) = match &scanned.kind {
        ScanKind::Dir => (seal.seal_whole(scanned, None, &[])?, Real::Dir),
        ScanKind::Symlink { target } => (
            seal.seal_whole(scanned, None, &[])?,
            Real::Symlink(target.to_vec()),
        ),
        ScanKind::File => match source_file::prepare(source, scanned, copies)? {
            Opened::Small {
                stat,
                data,
                hash,
                copy,
            } => (
                seal.seal_whole(scanned, Some(&stat), &data)?,
                Real::File { stat, hash, copy },
            ),
            // Read again as chunks by the chunked object's reader.
            Opened::Large { .. } => return Ok(None),
        },
    };
    Ok(Some(Box::new((object, real))))
}

/// Sends one planned entry of a sealed folder on a stream of its own,
/// whatever its action (a metadata-only change re-sends the whole object:
/// its header changed), and waits for the receiver's answer.
pub async fn send_entry(
    ctx: &TransferContext<impl Link>,
    seal: &Arc<Sealing>,
    item: PlanItem,
) -> Result<Sent, SendEntryError> {
    let mut channel = ctx.open().await?;
    let scanned = item.entry;
    let (s, source, copies, entry) = (
        seal.clone(),
        ctx.source.clone(),
        ctx.copies.clone(),
        scanned.clone(),
    );
    let prepared = blocking(move || prepare(&s, &source, copies.as_deref(), &entry)).await??;
    let (object, real) = match prepared {
        Some(prepared) => *prepared,
        None => {
            drop(channel);
            return send_streamed(ctx, seal, scanned).await;
        }
    };
    let mut machine = EntrySender::new(Offer::Whole);
    let mut frames = Vec::new();
    object.frames(&mut frames)?;
    let sent = channel.send.send_raw(&frames).await;
    unless_stopped(&mut channel, &mut machine, sent.map_err(Into::into)).await?;
    let wire = object.len();
    match real {
        Real::Dir => {
            channel.send.finish();
            answer(&mut channel, &mut machine).await?;
            stored_dir_or_symlink(ctx, scanned, None).await
        }
        Real::Symlink(target) => {
            channel.send.finish();
            answer(&mut channel, &mut machine).await?;
            stored_dir_or_symlink(ctx, scanned, Some(target)).await
        }
        Real::File { stat, hash, copy } => {
            ctx.status.progress.add_bytes(stat.size);
            let bytes = ContentBytes {
                fresh: stat.size,
                wire,
            };
            acknowledged(&mut channel, &mut machine, scanned, stat, hash, copy, bytes).await
        }
    }
}

/// Sends a large file as a chunked object ([`super::sealed_delta`]),
/// against the base the index knows; again without it if the receiver's
/// copy of the base turns out damaged.
async fn send_streamed(
    ctx: &TransferContext<impl Link>,
    seal: &Arc<Sealing>,
    scanned: ScanEntry,
) -> Result<Sent, SendEntryError> {
    let channel = ctx.open().await?;
    match send_chunked(ctx, seal, channel, scanned.clone(), true).await {
        Err(SendEntryError::BaseDamaged(why)) => {
            tracing::warn!(path = %scanned.path, "{why}; sending it whole");
            let channel = ctx.open().await?;
            send_chunked(ctx, seal, channel, scanned, false).await
        }
        other => other,
    }
}

/// One attempt at a chunked object, with or without a base.
async fn send_chunked(
    ctx: &TransferContext<impl Link>,
    seal: &Arc<Sealing>,
    channel: Channel,
    scanned: ScanEntry,
    use_base: bool,
) -> Result<Sent, SendEntryError> {
    let reader = SealedDeltaReader {
        source: ctx.source.clone(),
        entry: scanned.clone(),
        copies: ctx.copies.clone(),
        index: ctx.index.clone(),
        use_base,
        compress: ctx.compress,
        seal: seal.clone(),
    };
    stream_chunked(ctx, channel, scanned, move |tx, go| reader.run(tx, go)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use ferry_proto::seal::{FolderSecret, Opener};

    fn scanned(path: &str, kind: ScanKind, size: u64) -> ScanEntry {
        ScanEntry {
            path: RelPath::from_bytes(path).unwrap(),
            kind,
            size,
            mtime_ns: 1_700_000_000_123_456_789,
            mode: 0o750,
            ino: 0,
            dev: 0,
        }
    }

    /// The messages of a run of frames.
    fn messages(mut frames: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while !frames.is_empty() {
            let len = u32::from_be_bytes(frames[..4].try_into().unwrap()) as usize;
            out.push(postcard::from_bytes(&frames[4..4 + len]).unwrap());
            frames = &frames[4 + len..];
        }
        out
    }

    #[test]
    fn the_header_holds_the_real_path_and_metadata() {
        let link = ScanKind::Symlink {
            target: b"../secret/target".to_vec().into(),
        };
        let h = header(&scanned("a/link", link, 16), None);
        assert_eq!(h.path.to_string(), "a/link");
        let target = b"../secret/target".to_vec();
        assert_eq!(h.kind, SealedKind::Symlink { target });
        assert_eq!((h.mode, h.size), (0o750, 0));
        assert_eq!(h.mtime_ns, 1_700_000_000_123_456_789);
        assert_eq!(header(&scanned("d", ScanKind::Dir, 4096), None).size, 0);
        // A file as scanned, then as opened: the open file's metadata wins.
        let file = scanned("f", ScanKind::File, 10);
        assert_eq!(header(&file, None).size, 10);
        let stat = FileStat {
            size: 12,
            mtime_ns: 5,
            mode: 0o600,
            ino: 1,
            dev: 1,
        };
        let h = header(&file, Some(&stat));
        assert_eq!((h.size, h.mtime_ns, h.mode), (12, 5, 0o600));
        assert_eq!(h.kind, SealedKind::File);
    }

    #[test]
    fn an_object_sealed_whole_travels_as_a_0600_file_at_its_opaque_path() {
        let secret = FolderSecret::generate().unwrap();
        let seal = Sealing::new(&secret.public()).unwrap();
        let file = scanned("notes/plan.txt", ScanKind::File, 11);
        let stat = FileStat {
            size: 11,
            mtime_ns: 42,
            mode: 0o640,
            ino: 0,
            dev: 0,
        };
        let object = seal.seal_whole(&file, Some(&stat), b"hello world").unwrap();
        let path = RelPath::from_bytes("notes/plan.txt").unwrap();
        assert_eq!(object.entry.path, secret.public().opaque_path(&path));
        assert_eq!((object.entry.mode, object.entry.mtime_ns), (0o600, 0));
        let len = RunSealer::object_len(&header(&file, Some(&stat))).unwrap();
        assert_eq!(object.len(), len);
        let size_and_inline = EntryKind::File {
            size: len,
            content: Content::Inline,
        };
        assert_eq!(object.entry.kind, size_and_inline);
        assert_eq!(object.hash, *blake3::hash(&object.object).as_bytes());
        // Its frames: the header, the object raw, its hash.
        let mut frames = Vec::new();
        object.frames(&mut frames).unwrap();
        let got = messages(&frames);
        assert_eq!(got[0], Message::Entry(object.entry.clone()));
        let data: Vec<u8> = got[1..got.len() - 1]
            .iter()
            .flat_map(|m| match m {
                Message::Data(d) => d.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(data, object.object);
        assert_eq!(got.last(), Some(&Message::End { hash: object.hash }));
        // The folder key opens it to the entry.
        let (opened, content) = Opener::new(&secret).open(&object.object).unwrap();
        assert_eq!(opened, header(&file, Some(&stat)));
        assert_eq!(content, b"hello world");
    }

    #[test]
    fn a_small_file_that_compresses_is_sealed_compressed_and_opens_whole() {
        let secret = FolderSecret::generate().unwrap();
        let text = b"the quokka owes the marmot acorns; ".repeat(300);
        let file = scanned("notes/ledger.txt", ScanKind::File, text.len() as u64);
        let stat = FileStat {
            size: text.len() as u64,
            mtime_ns: 42,
            mode: 0o640,
            ino: 0,
            dev: 0,
        };
        let off = Sealing::new(&secret.public()).unwrap();
        let auto = Sealing::new(&secret.public())
            .unwrap()
            .compressing(CompressMode::Auto);
        let whole = off.seal_whole(&file, Some(&stat), &text).unwrap();
        let packed = auto.seal_whole(&file, Some(&stat), &text).unwrap();
        assert!(whole.len() > text.len() as u64);
        assert!(
            packed.len() * 10 < whole.len(),
            "{} vs {}",
            packed.len(),
            whole.len()
        );
        for object in [&whole, &packed] {
            let (opened, content) = Opener::new(&secret).open(&object.object).unwrap();
            assert_eq!(opened, header(&file, Some(&stat)));
            assert!(content == text);
        }
        // Random bytes do not compress: sealed as they are.
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let file = scanned("noise.bin", ScanKind::File, noise.len() as u64);
        let stat = FileStat {
            size: noise.len() as u64,
            ..stat
        };
        let sealed = auto.seal_whole(&file, Some(&stat), &noise).unwrap();
        assert_eq!(
            sealed.len(),
            RunSealer::object_len(&header(&file, Some(&stat))).unwrap()
        );
    }

    #[test]
    fn the_receivers_words_name_the_real_path() {
        let secret = FolderSecret::generate().unwrap();
        let seal = Sealing::new(&secret.public()).unwrap();
        let path = "notes/plan.txt";
        let opaque = seal.opaque_path(&RelPath::from_bytes(path).unwrap());
        let said =
            format!("the receiver did not store it: {opaque} (3.1 MiB) was not stored: over quota");
        assert_eq!(
            seal.real_names(&said, path),
            "the receiver did not store it: notes/plan.txt (3.1 MiB) was not stored: over quota"
        );
        assert_eq!(seal.real_names("disk full", path), "disk full");
    }

    #[test]
    fn deletions_go_by_opaque_paths_in_order_and_small_objects_fit_bundles() {
        let secret = FolderSecret::generate().unwrap();
        let seal = Sealing::new(&secret.public()).unwrap();
        let paths: Vec<RelPath> = ["d/e/c", "d/e", "a.txt"]
            .iter()
            .map(|p| RelPath::from_bytes(*p).unwrap())
            .collect();
        let wire = seal.wire_paths(&paths);
        assert_eq!(wire.len(), 3);
        for (real, sent) in paths.iter().zip(&wire) {
            assert_eq!(*sent, seal.opaque_path(real));
            assert_ne!(sent, real);
        }
        assert!(seal.fits(&scanned("s", ScanKind::File, 1000)));
        let large = ferry_proto::MAX_BUNDLED;
        assert!(!seal.fits(&scanned("l", ScanKind::File, large)));
        // Whatever the action (a metadata-only change is sent whole, in a
        // bundle if small): only the object's size counts.
        assert!(seal.fits(&scanned("t", ScanKind::File, 10)));
        assert!(seal.fits(&scanned("d", ScanKind::Dir, 0)));
    }
}
