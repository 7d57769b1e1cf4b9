//! Framing: each message is a 4-byte big-endian length followed by that many
//! bytes of postcard. The length is checked against [`MAX_FRAME`] before any
//! buffer is sized from it.

use crate::message::Message;

/// Largest frame body accepted, in bytes: a full [`crate::MAX_DATA`] chunk
/// plus room for the envelope.
pub const MAX_FRAME: usize = crate::MAX_DATA + 64 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message")]
    Malformed(#[from] postcard::Error),
    #[error("malformed message: {extra} bytes left over after the message")]
    TrailingBytes { extra: usize },
    #[error("malformed message: not in canonical form ({len} bytes where {canonical} suffice)")]
    NonCanonical { len: usize, canonical: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("i/o error on the stream")]
    Io(#[from] std::io::Error),
}

/// Encodes `message` as one frame (length prefix included).
pub fn encode(message: &Message) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(message, vec![0u8; 4])?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// The frame header and message prefix of a `Data` message carrying `len`
/// bytes: write this, then the bytes, to send `Message::Data` without copying
/// the content into a message first.
pub fn data_header(len: usize) -> Result<Vec<u8>, FrameError> {
    if len > crate::MAX_DATA {
        return Err(FrameError::TooLarge {
            len,
            max: crate::MAX_DATA,
        });
    }
    // Variant index of `Message::Data`, then the byte length as a varint.
    let mut prefix = vec![5u8];
    let mut n = len as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    let body = prefix.len() + len;
    let mut out = Vec::with_capacity(4 + prefix.len());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&prefix);
    Ok(out)
}

/// If `prefix` (the first bytes of a frame body) starts a `Data` message,
/// returns the content length it announces and how many bytes of `prefix`
/// the tag and length took. Lets a reader put a `Data` frame's content
/// straight into its own buffer instead of decoding a copy of it.
pub fn data_prefix(prefix: &[u8]) -> Option<(usize, usize)> {
    if prefix.first() != Some(&5) {
        return None;
    }
    let mut len = 0usize;
    // MAX_DATA fits in three varint bytes.
    for (i, byte) in prefix.iter().skip(1).take(3).enumerate() {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((len, i + 2));
        }
    }
    None
}

/// Reads the length of a frame from its 4-byte header, rejecting lengths over
/// [`MAX_FRAME`].
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Decodes one frame body. The whole body must be one message, in its
/// canonical encoding (the one [`encode`] produces): postcard itself also
/// accepts over-long varints, so each message would have many encodings.
pub fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    let (message, rest) = postcard::take_from_bytes::<Message>(body)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { extra: rest.len() });
    }
    // Over-long varints are the only freedom postcard's decoder allows (bools,
    // option tags, strings and byte arrays are exact), and they only ever
    // lengthen an encoding: the body is canonical iff it is as long as the
    // re-encoding. Counting costs no copy, even for `Data`.
    let canonical = postcard::serialize_with_flavor::<Message, _, usize>(
        &message,
        postcard::ser_flavors::Size::default(),
    )?;
    if canonical != body.len() {
        return Err(FrameError::NonCanonical {
            len: body.len(),
            canonical,
        });
    }
    Ok(message)
}

/// Decodes the first complete frame of `buf`, if there is one, returning the
/// message and the number of bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = body_len([header[0], header[1], header[2], header[3]])?;
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, 4 + len)))
}

/// A [`tokio_util::codec`] codec for frames, for any `AsyncRead`/`AsyncWrite`.
#[cfg(feature = "codec")]
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

#[cfg(feature = "codec")]
impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Message>, FrameError> {
        let Some(header) = src.get(..4) else {
            return Ok(None);
        };
        let len = body_len([header[0], header[1], header[2], header[3]])?;
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(4 + len);
        decode_body(&frame[4..]).map(Some)
    }

    fn decode_eof(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Message>, FrameError> {
        match self.decode(src)? {
            Some(message) => Ok(Some(message)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

#[cfg(feature = "codec")]
impl tokio_util::codec::Encoder<&Message> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, message: &Message, dst: &mut bytes::BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&encode(message)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frame = encode(&Message::Busy { retry_after_ms: 5 }).unwrap();
        assert_eq!(frame, [0, 0, 0, 2, 0x02, 0x05]);
        let (message, used) = decode(&frame).unwrap().unwrap();
        assert_eq!(message, Message::Busy { retry_after_ms: 5 });
        assert_eq!(used, 6);
        assert!(decode(&frame[..5]).unwrap().is_none());
    }

    #[test]
    fn data_header_matches_encoding() {
        for len in [0, 1, 127, 128, 300, crate::MAX_DATA] {
            let data = vec![0xab; len];
            let mut framed = data_header(len).unwrap();
            framed.extend_from_slice(&data);
            assert_eq!(framed, encode(&Message::Data(data)).unwrap(), "len {len}");
        }
        assert!(data_header(crate::MAX_DATA + 1).is_err());
    }

    #[test]
    fn data_prefix_agrees_with_decoding() {
        for len in [0, 1, 127, 128, 16_383, 16_384, crate::MAX_DATA] {
            let frame = encode(&Message::Data(vec![1; len])).unwrap();
            let body = &frame[4..];
            let (n, used) = data_prefix(&body[..body.len().min(4)]).unwrap();
            assert_eq!((n, used + n), (len, body.len()), "len {len}");
        }
        assert_eq!(data_prefix(&[0x08]), None);
        assert_eq!(data_prefix(&[0x05, 0x80, 0x80, 0x80]), None);
        assert_eq!(data_prefix(&[0x05]), None);
    }

    #[test]
    fn oversized_length_rejected_before_allocation() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(decode(&header), Err(FrameError::TooLarge { .. })));
        assert!(matches!(
            body_len([0xff; 4]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_trailing_bytes_rejected() {
        assert!(matches!(
            decode(&[0, 0, 0, 1, 0xee]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[0, 0, 0, 2, 0x08, 0x00]),
            Err(FrameError::TrailingBytes { .. })
        ));
    }

    /// Regression: postcard accepts over-long varints, so `Committed { 0 }`
    /// also decoded from `0e 80 00` and a message had many encodings
    /// (found by the `frame_decode` property).
    #[test]
    fn non_canonical_encoding_rejected() {
        assert!(matches!(
            decode(&[0, 0, 0, 3, 0x0e, 0x80, 0x00]),
            Err(FrameError::NonCanonical {
                len: 3,
                canonical: 2
            })
        ));
        // An over-long variant index.
        assert!(matches!(
            decode(&[0, 0, 0, 2, 0x88, 0x00]),
            Err(FrameError::NonCanonical { .. })
        ));
        assert_eq!(
            decode(&[0, 0, 0, 2, 0x0e, 0x00]).unwrap().unwrap().0,
            Message::Committed { run_id: 0 }
        );
    }

    #[test]
    fn oversized_message_not_encoded() {
        let huge = Message::Data(vec![0; MAX_FRAME]);
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge { .. })));
    }

    #[cfg(feature = "codec")]
    #[test]
    fn codec_splits_frames() {
        use tokio_util::codec::Decoder;
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&encode(&Message::Want).unwrap());
        buf.extend_from_slice(&encode(&Message::Stored).unwrap()[..3]);
        let mut codec = FrameCodec;
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Want));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated)
        ));
    }
}
