//! Delta transfer: a changed large file costs the chunks that changed, a
//! renamed one almost nothing, compressible content travels compressed, and
//! a damaged base on the receiver is noticed and the file sent whole.
//! Bytes are counted on the wire (UDP, both directions, handshake included).

use ferry_agent::config::SenderConfig;
use ferry_tests::tree;

use crate::sync::pseudo_random;
use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "delta tests pairing secret";
const KIB: u64 = 1024;
const MIB: usize = 1024 * 1024;
/// The large file of these tests (the table is for 256 MiB; the
/// cost of a delta does not grow with the file, which the bench shows).
const LARGE: usize = 32 * MIB;

struct Delta {
    _dir: tempfile::TempDir,
    receiver: TestReceiver,
    sender: TestSender,
    config: SenderConfig,
}

impl Delta {
    /// A receiver, a sender, and `big.bin` sent once.
    async fn new() -> anyhow::Result<Delta> {
        let dir = tempfile::tempdir()?;
        let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
        let sender = TestSender::new(dir.path(), "laptop")?;
        let config = sender.with_secret(&receiver, SECRET)?;
        tree::write(&sender.source, "big.bin", pseudo_random(LARGE, 7))?;
        tree::write(&sender.source, "note.txt", "a small file")?;
        let first = send_config(&config).await?;
        assert_eq!((first.files_sent, first.errors), (2, 0), "{first:?}");
        assert!(first.bytes_on_wire > LARGE as u64);
        Ok(Delta {
            _dir: dir,
            receiver,
            sender,
            config,
        })
    }

    fn big(&self) -> std::path::PathBuf {
        self.sender.source.join("big.bin")
    }

    /// Sends once; the mirror must then equal the source. Returns the bytes
    /// on the wire.
    async fn resync(&self) -> anyhow::Result<u64> {
        let summary = send_config(&self.config).await?;
        assert_eq!(summary.errors, 0, "{summary:?}");
        tree::assert_same(&self.sender.source, &self.receiver.mirror("laptop", "docs"))?;
        Ok(summary.bytes_on_wire)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_appended_costs_one_chunk() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    let mut data = std::fs::read(d.big())?;
    data.push(0x42);
    std::fs::write(d.big(), &data)?;
    let wire = d.resync().await?;
    assert!(wire <= 256 * KIB, "{wire} bytes on the wire");
    d.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_inserted_at_the_start_costs_one_chunk() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    let mut data = vec![0x42];
    data.extend_from_slice(&std::fs::read(d.big())?);
    std::fs::write(d.big(), &data)?;
    let wire = d.resync().await?;
    assert!(wire <= 256 * KIB, "{wire} bytes on the wire");
    // The old version is kept, whole.
    let versions = d.receiver.store.versions(
        &namespace(&d.receiver)?,
        &ferry_proto::RelPath::from_bytes("big.bin")?,
    )?;
    assert_eq!(versions.len(), 2);
    assert_eq!(std::fs::read(&versions[1].location)?, data[1..]);
    d.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_file_is_not_sent_again() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    std::fs::create_dir(d.sender.source.join("moved"))?;
    std::fs::rename(d.big(), d.sender.source.join("moved/renamed.bin"))?;
    let wire = d.resync().await?;
    assert!(wire <= 256 * KIB, "{wire} bytes on the wire");
    d.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_file_is_not_sent_again() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    std::fs::copy(d.big(), d.sender.source.join("copy.bin"))?;
    let wire = d.resync().await?;
    assert!(wire <= 256 * KIB, "{wire} bytes on the wire");
    d.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_overwritten_in_the_middle_costs_about_one_mib() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    let mut data = std::fs::read(d.big())?;
    let mid = data.len() / 2;
    data[mid..mid + MIB].copy_from_slice(&pseudo_random(MIB, 99));
    std::fs::write(d.big(), &data)?;
    let wire = d.resync().await?;
    assert!(wire <= 1536 * KIB, "{wire} bytes on the wire");
    d.receiver.stop().await
}

/// Text compresses, random bytes do not: one file holding both travels as
/// a mix of compressed and raw chunks, and arrives exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_raw_chunks_mix_in_one_file() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {} of the ferry log\n", i % 977).into_bytes())
        .collect();
    let random = pseudo_random(4 * MIB, 3);
    let mut mixed = text.clone();
    mixed.extend_from_slice(&random);
    mixed.extend_from_slice(&text);
    tree::write(&d.sender.source, "mixed.log", &mixed)?;
    let summary = send_config(&d.config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&d.sender.source, &d.receiver.mirror("laptop", "docs"))?;
    let sent = summary.bytes_file_data_wire;
    // The random part goes raw, the text compressed to a fraction.
    assert!(sent >= random.len() as u64, "{sent}");
    assert!(
        sent < (random.len() + text.len() / 2) as u64,
        "{sent} bytes of content for {} bytes of which {} compress",
        mixed.len(),
        2 * text.len()
    );

    // With --compress off everything goes raw.
    let off = SenderConfig {
        compress: Some("off".into()),
        ..d.config.clone()
    };
    tree::write(&d.sender.source, "mixed2.log", [&mixed[..], b"!"].concat())?;
    std::fs::remove_file(d.sender.source.join("mixed.log"))?;
    let summary = send_config(&off).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&d.sender.source, &d.receiver.mirror("laptop", "docs"))?;
    d.receiver.stop().await
}

/// Text of `len` bytes or a little more, made of words from `vocab`.
fn words(vocab: &[String], len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Common words far more often than rare ones.
        let i = ((x % 1000) * (x % 1000) / 1000 * vocab.len() as u64 / 1000) as usize;
        out.extend_from_slice(vocab[i].as_bytes());
        out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out
}

/// A folder of small text files travels in a bundle whose compression runs
/// across files: far fewer bytes than compressing each file on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_text_files_compress_against_each_other() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    let vocab: Vec<String> = (0..400u64)
        .map(|i| {
            let bytes = pseudo_random(3 + (i % 7) as usize, 1000 + i);
            bytes
                .iter()
                .take(3 + (i % 7) as usize)
                .map(|b| (b'a' + b % 26) as char)
                .collect()
        })
        .collect();
    let (mut raw, mut alone) = (0u64, 0u64);
    for i in 0..300u64 {
        let text = words(&vocab, 2_000 + (i as usize * 37) % 4_000, i);
        raw += text.len() as u64;
        alone += zstd::bulk::compress(&text, 3)?.len() as u64;
        tree::write(
            &sender.source,
            format!("notes/{:02}/{i}.txt", i % 10),
            &text,
        )?;
    }
    let summary = send_config(&config).await?;
    assert_eq!(
        (summary.files_sent, summary.errors),
        (300, 0),
        "{summary:?}"
    );
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    let sent = summary.bytes_file_data_wire;
    assert!(
        sent * 10 < alone * 8,
        "{sent} bytes of content; each file compressed alone: {alone}; raw: {raw}"
    );
    receiver.stop().await
}

/// Someone changed the stored copy on the receiver: the delta's base no
/// longer matches its chunk list. The receiver notices while copying, and
/// the sender sends the file whole; nothing wrong is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_base_is_detected_and_the_file_sent_whole() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    let stored = d.receiver.mirror("laptop", "docs").join("big.bin");
    let mut damaged = std::fs::read(&stored)?;
    damaged[LARGE / 3] ^= 0xff;
    std::fs::write(&stored, &damaged)?;
    let mut data = std::fs::read(d.big())?;
    data.push(1);
    std::fs::write(d.big(), &data)?;
    let summary = send_config(&d.config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&d.sender.source, &d.receiver.mirror("laptop", "docs"))?;
    assert!(summary.bytes_file_data_new >= LARGE as u64, "{summary:?}");
    d.receiver.stop().await
}

fn namespace(receiver: &TestReceiver) -> anyhow::Result<ferry_agent::store::Namespace> {
    let sender = receiver
        .store
        .sender_by_name(&ferry_proto::Name::new("laptop")?)?
        .ok_or_else(|| anyhow::anyhow!("no sender laptop"))?;
    Ok(receiver
        .store
        .namespace(&sender, &ferry_proto::Name::new("docs")?))
}
