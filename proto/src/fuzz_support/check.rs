//! The properties the fuzz targets check: the decoders and validators never
//! panic, agree with each other and with the rules of the crate doc, and
//! every message round-trips.

use std::path::{Component, Path};

use super::generate::{arbitrary_message, Bytes};
use crate::frame::{self, FrameError, MAX_FRAME};
use crate::message::*;
use crate::path::{Name, RelPath, MAX_COMPONENT_LEN, MAX_PATH_LEN};

/// `RelPath`'s rules as the crate doc states them, written without looking
/// at its code: relative, `/`-separated, no empty, `.` or `..` component, no
/// NUL, 1 to [`MAX_PATH_LEN`] bytes, components of at most
/// [`MAX_COMPONENT_LEN`] bytes.
pub fn spec_rel_path(bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.len() > MAX_PATH_LEN {
        return false;
    }
    let mut component_len = 0usize;
    let mut component_dots = true;
    // Walk the bytes once, closing a component at each `/` and at the end.
    for &b in bytes.iter().chain(std::iter::once(&b'/')) {
        match b {
            0 => return false,
            b'/' => {
                let dot_only = component_dots && (component_len == 1 || component_len == 2);
                if component_len == 0 || dot_only || component_len > MAX_COMPONENT_LEN {
                    return false;
                }
                component_len = 0;
                component_dots = true;
            }
            _ => {
                component_len += 1;
                component_dots &= b == b'.';
            }
        }
    }
    true
}

/// Frame decoding on arbitrary bytes: never panics; a decoded message takes
/// exactly the bytes its canonical encoding takes; the tokio-util codec,
/// fed the same bytes in pieces, agrees with [`frame::decode`].
pub fn check_frame_decode(data: &[u8]) {
    let mut rest = data;
    let mut messages = Vec::new();
    loop {
        match frame::decode(rest) {
            Ok(Some((message, used))) => {
                let again = frame::encode(&message);
                assert!(
                    matches!(&again, Ok(bytes) if bytes[..] == rest[..used]),
                    "{message:?} decoded from {:?} re-encodes differently: {again:?}",
                    &rest[..used]
                );
                rest = &rest[used..];
                messages.push(message);
            }
            Ok(None) => {
                if let Some(header) = rest.get(..4) {
                    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    assert!(rest.len() < 4 + len as usize, "complete frame not decoded");
                }
                break;
            }
            Err(FrameError::TooLarge { len, .. }) => {
                assert!(len > MAX_FRAME);
                break;
            }
            Err(_) => break,
        }
    }
    #[cfg(feature = "codec")]
    codec_agrees(data, &messages);
}

#[cfg(feature = "codec")]
fn codec_agrees(data: &[u8], messages: &[Message]) {
    use tokio_util::codec::Decoder;
    // Feed in pieces whose sizes come from the data itself.
    let step = 1 + data.first().map_or(0, |b| usize::from(*b) % 7);
    let mut codec = frame::FrameCodec;
    let mut buf = bytes::BytesMut::new();
    let mut got = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(message)) => got.push(message),
                Ok(None) => break,
                Err(_) => {
                    assert!(got.len() <= messages.len());
                    assert_eq!(got[..], messages[..got.len()]);
                    return;
                }
            }
        }
    }
    assert_eq!(got, messages, "codec and frame::decode disagree");
}

/// Message decoding on arbitrary bytes: never panics; what decodes
/// re-encodes to the same bytes (the encoding is canonical) and decodes
/// again to the same message.
pub fn check_message_decode(data: &[u8]) {
    if let Ok(message) = frame::decode_body(data) {
        let again = postcard::to_stdvec(&message);
        assert!(
            matches!(&again, Ok(bytes) if bytes[..] == data[..]),
            "{message:?} decoded from {data:?} re-encodes as {again:?}"
        );
    }
    // And the same through a generated message: it must round-trip.
    let message = arbitrary_message(&mut Bytes::new(data));
    check_round_trip(&message);
}

/// `message` survives encode then decode, as a frame and as a body.
pub fn check_round_trip(message: &Message) {
    let Ok(bytes) = frame::encode(message) else {
        panic!("{message:?} does not encode");
    };
    match frame::decode(&bytes) {
        Ok(Some((back, used))) => {
            assert_eq!(&back, message);
            assert_eq!(used, bytes.len());
        }
        other => panic!("{message:?} does not decode from its encoding: {other:?}"),
    }
}

/// Path and name validation on arbitrary bytes: `RelPath::from_bytes`
/// accepts exactly what [`spec_rel_path`] accepts; an accepted path joined
/// under a root stays below it; `Name::new` accepts only single safe
/// components; validation on decode agrees with validation on build.
pub fn check_path(data: &[u8]) {
    let accepted = RelPath::from_bytes(data);
    assert_eq!(
        accepted.is_ok(),
        spec_rel_path(data),
        "RelPath::from_bytes and the rules disagree on {:?}: {accepted:?}",
        String::from_utf8_lossy(data)
    );
    if let Ok(path) = &accepted {
        assert_stays_under(path);
    }
    // Decoding validates exactly like building.
    if let Ok(body) = postcard::to_stdvec(&serde_bytes::Bytes::new(data)) {
        let decoded = postcard::from_bytes::<RelPath>(&body);
        assert_eq!(decoded.ok(), accepted.ok());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(name) = Name::new(text) {
            let mut parts = Path::new(name.as_str()).components();
            assert!(
                matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none(),
                "Name {name:?} is not one plain component"
            );
            assert!(!name.as_str().starts_with('.') && name.as_str().len() <= 255);
        }
    }
}

/// Fails if `path`, joined under a root, could leave it.
fn assert_stays_under(path: &RelPath) {
    let root = Path::new("/r/o/o/t");
    let joined = path.under(root);
    assert!(joined.starts_with(root), "{path:?} leaves the root");
    let depth = root.components().count();
    let below: Vec<_> = joined.components().skip(depth).collect();
    assert!(
        below.iter().all(|c| matches!(c, Component::Normal(_))),
        "{path:?} has a non-plain component under the root: {below:?}"
    );
    assert_eq!(below.len(), path.components().count(), "{path:?}");
}
