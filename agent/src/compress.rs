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
}

/// `data` compressed, if `mode` says to try and the result is smaller by a
/// margin worth the receiver's time; `None`: send it raw.
pub fn compress(data: &[u8], mode: CompressMode) -> Option<Vec<u8>> {
    if mode == CompressMode::Off || data.len() < MIN_PIECE || data.len() > MAX_DATA {
        return None;
    }
    if mode == CompressMode::Auto && data.len() > 2 * SAMPLE {
        let mid = data.len() / 2 - SAMPLE / 2;
        let sample = &data[mid..mid + SAMPLE];
        let small = zstd::bulk::compress(sample, 1).ok()?;
        if small.len() * 10 > sample.len() * 9 {
            return None;
        }
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
    fn modes_parse() {
        assert_eq!("auto".parse::<CompressMode>(), Ok(CompressMode::Auto));
        assert_eq!(" ON ".parse::<CompressMode>(), Ok(CompressMode::On));
        assert_eq!("off".parse::<CompressMode>(), Ok(CompressMode::Off));
        assert!("fast".parse::<CompressMode>().is_err());
        assert_eq!(CompressMode::Auto.to_string(), "auto");
    }
}
