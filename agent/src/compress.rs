//! zstd per piece of content (a chunk, or a small file's content): sent
//! compressed only when that makes it smaller. `auto` first compresses a
//! small sample at the fastest level, so incompressible data (media,
//! archives, encrypted files) costs almost nothing and goes raw.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use ferry_proto::MAX_DATA;

/// When to compress content (`--compress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressMode {
    /// Compress what a sample shows to be compressible.
    #[default]
    Auto,
    /// Try every piece (still sent raw if it would not shrink).
    On,
    /// Never compress.
    Off,
}

impl FromStr for CompressMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(CompressMode::Auto),
            "on" | "yes" | "true" => Ok(CompressMode::On),
            "off" | "no" | "false" => Ok(CompressMode::Off),
            other => Err(format!(
                "{other:?} is not a compression mode: use auto, on or off"
            )),
        }
    }
}

impl fmt::Display for CompressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompressMode::Auto => "auto",
            CompressMode::On => "on",
            CompressMode::Off => "off",
        })
    }
}

/// The zstd level content is compressed with.
const LEVEL: i32 = 3;
/// Pieces smaller than this are never worth compressing.
const MIN_PIECE: usize = 512;
/// Bytes `auto` samples before compressing a larger piece.
const SAMPLE: usize = 4096;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static SAMPLER: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// `data` compressed, if `mode` says to try and the result is smaller by a
/// margin worth the receiver's time; `None`: send it raw.
pub fn compress(data: &[u8], mode: CompressMode) -> Option<Vec<u8>> {
    if data.len() < MIN_PIECE || data.len() > MAX_DATA || !worth_trying(data, mode) {
        return None;
    }
    let out = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        cell.as_mut()?.compress(data).ok()
    })?;
    // At least 3 % smaller, or not worth decompressing.
    (out.len() * 100 <= data.len() * 97).then_some(out)
}

/// Whether `mode` says to compress `data`: never when off, always when on;
/// in `auto`, a piece larger than two samples if a sample of its middle
/// compressed at the fastest level shrinks by a tenth, a smaller one if its
/// bytes are not spread like noise (random, encrypted or already compressed
/// bytes use nearly all 8 bits of every byte).
pub fn worth_trying(data: &[u8], mode: CompressMode) -> bool {
    match mode {
        CompressMode::Off => false,
        CompressMode::On => true,
        CompressMode::Auto if data.len() <= 2 * SAMPLE => bits_per_byte(data) < NOISE_BITS,
        CompressMode::Auto => {
            let mid = data.len() / 2 - SAMPLE / 2;
            let sample = &data[mid..mid + SAMPLE];
            SAMPLER.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = zstd::bulk::Compressor::new(1).ok();
                }
                cell.as_mut()
                    .and_then(|c| c.compress(sample).ok())
                    .is_some_and(|small| small.len() * 10 <= sample.len() * 9)
            })
        }
    }
}

/// Order-0 entropy above which a small piece is taken for noise. Text is
/// near 4.5 bits per byte, random bytes above 7.9 (7.6 for 1 KiB of them).
const NOISE_BITS: f64 = 7.2;

/// The order-0 entropy of `data`, in bits per byte.
fn bits_per_byte(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A bundle stream's compressor: one zstd stream for many pieces (see
/// `ferry_proto`'s bundle streams), each flushed so that it decodes whole.
/// The context outlives files, so small text files compress against all the
/// text before them as if they were one file (per file, the text set of the
/// benchmark came to 35.9 MB; as one stream, 31.8 MB).
pub struct StreamEncoder(zstd::stream::raw::Encoder<'static>);

/// Hash and chain tables of a stream context, as powers of two: larger than
/// level 3's defaults (17 and 16), which suit a single small input. On the
/// benchmark's 100 MiB text set: 32.5 MB with the defaults, 31.8 MB with
/// these, at the same speed; the context takes about 5 MiB more.
const STREAM_HASH_LOG: u32 = 20;
const STREAM_CHAIN_LOG: u32 = 18;
/// Largest window a stream decoder accepts (8 MiB): a hostile sender cannot
/// make the receiver hold more per bundle. Ferry's encoder uses 2 MiB.
const STREAM_WINDOW_LOG_MAX: u32 = 23;

impl StreamEncoder {
    pub fn new() -> std::io::Result<StreamEncoder> {
        use zstd::stream::raw::CParameter;
        let mut encoder = zstd::stream::raw::Encoder::new(LEVEL)?;
        encoder.set_parameter(CParameter::HashLog(STREAM_HASH_LOG))?;
        encoder.set_parameter(CParameter::ChainLog(STREAM_CHAIN_LOG))?;
        Ok(StreamEncoder(encoder))
    }

    /// Appends `data`, compressed and flushed, to `out`.
    pub fn piece(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(data);
        loop {
            out.reserve(zstd::zstd_safe::compress_bound(data.len() - input.pos()) + 64);
            let start = out.len();
            let mut output = OutBuffer::around_pos(out, start);
            if input.pos() < data.len() {
                self.0.run(&mut input, &mut output)?;
            } else if self.0.flush(&mut output)? == 0 {
                return Ok(());
            }
        }
    }
}

/// A bundle stream's decompressor, the counterpart of [`StreamEncoder`].
pub struct StreamDecoder {
    decoder: zstd::stream::raw::Decoder<'static>,
    /// Where pieces are decoded, reused: each is then copied out at its size.
    scratch: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Result<StreamDecoder, DecompressError> {
        let err = |e: std::io::Error| DecompressError(e.to_string());
        let mut decoder = zstd::stream::raw::Decoder::new().map_err(err)?;
        decoder
            .set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
                STREAM_WINDOW_LOG_MAX,
            ))
            .map_err(err)?;
        Ok(StreamDecoder {
            decoder,
            scratch: Vec::with_capacity(MAX_DATA + 1),
        })
    }

    /// Decodes the next piece of the stream; more than [`MAX_DATA`] bytes
    /// is an error.
    pub fn piece(&mut self, packed: &[u8]) -> Result<Vec<u8>, DecompressError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let err = |e: std::io::Error| DecompressError(e.to_string());
        let out = &mut self.scratch;
        out.clear();
        let mut input = InBuffer::around(packed);
        loop {
            let (read, filled) = (input.pos(), out.len());
            let mut output = OutBuffer::around_pos(out, filled);
            self.decoder.run(&mut input, &mut output).map_err(err)?;
            if out.len() > MAX_DATA {
                return Err(DecompressError("a piece decodes to too much".into()));
            }
            // All input taken and room left: everything decodable is out.
            if input.pos() == packed.len() && out.len() < out.capacity() {
                return Ok(out.to_vec());
            }
            if input.pos() == read && out.len() == filled {
                return Err(DecompressError("the stream makes no progress".into()));
            }
        }
    }
}

/// Why compressed content was refused.
#[derive(Debug, thiserror::Error)]
#[error("compressed content is damaged or larger than {MAX_DATA} bytes: {0}")]
pub struct DecompressError(String);

/// Decompresses one piece; more than [`MAX_DATA`] bytes is an error, so a
/// hostile sender cannot make the receiver allocate more.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell =
                Some(zstd::bulk::Decompressor::new().map_err(|e| DecompressError(e.to_string()))?);
        }
        match cell.as_mut() {
            Some(d) => d
                .decompress(data, MAX_DATA)
                .map_err(|e| DecompressError(e.to_string())),
            None => Err(DecompressError("no decompressor".into())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        let words = ["ferry", "sync", "chunk", "delta", "store", "river", "boat"];
        let mut out = Vec::new();
        let mut i = 7usize;
        while out.len() < len {
            i = i.wrapping_mul(2_654_435_761).wrapping_add(1);
            out.extend_from_slice(words[i % words.len()].as_bytes());
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    fn random(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new().finalize_xof().fill(&mut out);
        out
    }

    #[test]
    fn text_shrinks_and_round_trips() {
        let data = text(200_000);
        let z = compress(&data, CompressMode::Auto).unwrap();
        assert!(z.len() < data.len() / 2, "{} of {}", z.len(), data.len());
        assert_eq!(decompress(&z).unwrap(), data);
    }

    #[test]
    fn random_bytes_go_raw() {
        let data = random(200_000);
        assert!(compress(&data, CompressMode::Auto).is_none());
        assert!(compress(&data, CompressMode::On).is_none());
        assert!(compress(&text(200_000), CompressMode::Off).is_none());
        assert!(compress(b"tiny", CompressMode::On).is_none());
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_DATA + 1], 3).unwrap();
        assert!(bomb.len() < 1000);
        assert!(decompress(&bomb).is_err());
        assert!(decompress(b"not zstd at all").is_err());
        let ok = zstd::bulk::compress(&vec![0u8; MAX_DATA], 3).unwrap();
        assert_eq!(decompress(&ok).unwrap().len(), MAX_DATA);
    }

    #[test]
    fn a_stream_round_trips_piece_by_piece_and_beats_pieces_alone() {
        // Small pieces that share words and phrases, like a folder of notes.
        let pieces: Vec<Vec<u8>> = (0..40).map(|i| text(1_000 + i * 50)).collect();
        let mut encoder = StreamEncoder::new().unwrap();
        let mut decoder = StreamDecoder::new().unwrap();
        let (mut streamed, mut alone) = (0, 0);
        for piece in &pieces {
            let mut packed = Vec::new();
            encoder.piece(piece, &mut packed).unwrap();
            streamed += packed.len();
            alone += zstd::bulk::compress(piece, LEVEL).unwrap().len();
            // Each piece decodes whole, on its own, in order.
            assert_eq!(&decoder.piece(&packed).unwrap(), piece);
        }
        assert!(streamed * 2 < alone, "stream {streamed} vs alone {alone}");
        // An empty piece is a valid (tiny) piece too.
        let mut packed = Vec::new();
        encoder.piece(b"", &mut packed).unwrap();
        assert!(decoder.piece(&packed).unwrap().is_empty());
    }

    #[test]
    fn a_stream_refuses_bombs_garbage_and_huge_windows() {
        let mut encoder = StreamEncoder::new().unwrap();
        let mut bomb = Vec::new();
        encoder.piece(&vec![0u8; MAX_DATA + 1], &mut bomb).unwrap();
        assert!(StreamDecoder::new().unwrap().piece(&bomb).is_err());
        assert!(StreamDecoder::new().unwrap().piece(b"not zstd").is_err());
        // A frame that asks for a 128 MiB window.
        let mut wide = zstd::stream::raw::Encoder::new(3).unwrap();
        wide.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        let mut packed = Vec::with_capacity(1 << 16);
        let data = text(100_000);
        {
            use zstd::stream::raw::Operation;
            let mut out = zstd::stream::raw::OutBuffer::around(&mut packed);
            let mut input = zstd::stream::raw::InBuffer::around(&data);
            wide.run(&mut input, &mut out).unwrap();
            wide.flush(&mut out).unwrap();
        }
        assert!(!packed.is_empty());
        assert!(StreamDecoder::new().unwrap().piece(&packed).is_err());
    }

    #[test]
    fn auto_tries_text_and_skips_noise() {
        assert!(worth_trying(&text(100_000), CompressMode::Auto));
        assert!(!worth_trying(&random(100_000), CompressMode::Auto));
        assert!(worth_trying(&random(100_000), CompressMode::On));
        assert!(!worth_trying(&text(100_000), CompressMode::Off));
        // Small pieces are judged by how their bytes spread.
        assert!(worth_trying(&text(1_000), CompressMode::Auto));
        assert!(!worth_trying(&random(1_000), CompressMode::Auto));
        assert!(!worth_trying(&random(8_000), CompressMode::Auto));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<CompressMode>(), Ok(CompressMode::Auto));
        assert_eq!(" ON ".parse::<CompressMode>(), Ok(CompressMode::On));
        assert_eq!("off".parse::<CompressMode>(), Ok(CompressMode::Off));
        assert!("fast".parse::<CompressMode>().is_err());
        assert_eq!(CompressMode::Auto.to_string(), "auto");
    }
}
