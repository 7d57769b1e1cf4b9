//! The device id: the blake3 hash of a node's public key, and its text form.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;

use super::IdentityError;

/// Number of characters in a device id's text form, without separators.
pub const DEVICE_ID_CHARS: usize = 52;
/// Characters per group in the displayed text form.
const GROUP_CHARS: usize = 13;
/// The RFC 4648 base32 alphabet.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A node's device id: the blake3 hash of its certificate's public key
/// (the DER of the SubjectPublicKeyInfo).
///
/// Its text form (`Display`, `Debug`, serde) is the RFC 4648 base32 encoding,
/// upper case, without padding (52 characters), in four groups of 13 joined by
/// `-`, e.g. `S6LFI3DEVMK2W-5DIWR47HM6CBV-MEBLYFVQHZTGW-XUCEVCLIBK4XA`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

impl DeviceId {
    /// The device id of the public key whose SubjectPublicKeyInfo DER is given.
    pub fn from_spki(spki_der: &[u8]) -> DeviceId {
        DeviceId(*blake3::hash(spki_der).as_bytes())
    }

    /// The device id of the public key in an X.509 certificate (DER).
    pub fn from_cert(cert_der: &[u8]) -> Result<DeviceId, IdentityError> {
        let der = CertificateDer::from(cert_der);
        let cert =
            webpki::EndEntityCert::try_from(&der).map_err(|e| IdentityError::BadCertificate {
                reason: e.to_string(),
            })?;
        Ok(DeviceId::from_spki(cert.subject_public_key_info().as_ref()))
    }

    /// The 32 raw bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 characters of the text form, for log lines.
    pub fn short(&self) -> String {
        let mut text = encode(&self.0);
        text.truncate(8);
        text
    }
}

impl From<[u8; 32]> for DeviceId {
    fn from(bytes: [u8; 32]) -> Self {
        DeviceId(bytes)
    }
}

/// Base32 (RFC 4648 alphabet, no padding) of the 32 bytes: 52 characters.
fn encode(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(DEVICE_ID_CHARS);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The value of one base32 character (either case), if it is one.
fn symbol_value(c: char) -> Option<u32> {
    match c.to_ascii_uppercase() {
        c @ 'A'..='Z' => Some(c as u32 - 'A' as u32),
        c @ '2'..='7' => Some(c as u32 - '2' as u32 + 26),
        _ => None,
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = encode(&self.0);
        // The text is ASCII, so every byte offset is a char boundary.
        for (i, group) in text.as_bytes().chunks(GROUP_CHARS).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for &b in group {
                fmt::Write::write_char(f, char::from(b))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDeviceIdError {
    /// Wrong number of base32 characters.
    #[error(
        "not a Ferry device id: expected 52 base32 characters, e.g. from `ferry id` \
         (found {found})"
    )]
    Length {
        /// How many base32 characters (and other non-separator characters) were found.
        found: usize,
    },
    /// A character outside the base32 alphabet.
    #[error(
        "not a Ferry device id: expected 52 base32 characters, e.g. from `ferry id` \
         ({found:?} is not one of A-Z, 2-7)"
    )]
    BadCharacter {
        /// The offending character.
        found: char,
    },
    /// The last character has bits set that no device id produces (a typo).
    #[error(
        "not a Ferry device id: expected 52 base32 characters, e.g. from `ferry id` \
         (the last character {found:?} cannot end a device id; check for a typo)"
    )]
    BadLastCharacter {
        /// The last character.
        found: char,
    },
}

impl FromStr for DeviceId {
    type Err = ParseDeviceIdError;

    /// Accepts upper or lower case, with or without `-` separators, and
    /// ignores whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let symbols: Vec<char> = s
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .collect();
        if symbols.len() != DEVICE_ID_CHARS {
            return Err(ParseDeviceIdError::Length {
                found: symbols.len(),
            });
        }
        let mut out = [0u8; 32];
        let mut acc: u32 = 0;
        let mut bits: u32 = 0;
        let mut n = 0;
        for &c in &symbols {
            let v = symbol_value(c).ok_or(ParseDeviceIdError::BadCharacter { found: c })?;
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if let Some(slot) = out.get_mut(n) {
                    *slot = (acc >> bits) as u8;
                }
                n += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // 52 * 5 = 260 bits: 256 data bits and 4 padding bits that must be zero,
        // so that every id has exactly one text form.
        if acc != 0 {
            let last = symbols.last().copied().unwrap_or('?');
            return Err(ParseDeviceIdError::BadLastCharacter { found: last });
        }
        Ok(DeviceId(out))
    }
}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceId {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        DeviceId(bytes)
    }

    #[test]
    fn text_form_is_four_groups_of_13() {
        let text = sample().to_string();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 4);
        assert!(groups.iter().all(|g| g.len() == GROUP_CHARS));
        assert!(text
            .chars()
            .all(|c| c == '-' || c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_eq!(format!("{:?}", sample()), text);
    }

    #[test]
    fn known_encoding_matches_rfc4648() {
        // All-zero bytes are all 'A'; 0xff.. is all '7' except the last, which
        // carries one data bit and four zero bits ('Q' = 16).
        let zero = DeviceId([0; 32]).to_string().replace('-', "");
        assert_eq!(zero, "A".repeat(52));
        let ones = DeviceId([0xff; 32]).to_string().replace('-', "");
        assert_eq!(ones, format!("{}Q", "7".repeat(51)));
    }

    #[test]
    fn round_trips_in_every_accepted_spelling() -> anyhow::Result<()> {
        for id in [sample(), DeviceId([0; 32]), DeviceId([0xff; 32])] {
            let text = id.to_string();
            assert_eq!(text.parse::<DeviceId>()?, id);
            assert_eq!(text.to_lowercase().parse::<DeviceId>()?, id);
            assert_eq!(text.replace('-', "").parse::<DeviceId>()?, id);
            assert_eq!(text.replace('-', " ").parse::<DeviceId>()?, id);
            assert_eq!(format!("  {text}\n").parse::<DeviceId>()?, id);
        }
        Ok(())
    }

    #[test]
    fn parse_errors_say_what_is_expected() {
        let text = sample().to_string();
        let short = &text[..text.len() - 1];
        let err = short.parse::<DeviceId>().err();
        assert_eq!(err, Some(ParseDeviceIdError::Length { found: 51 }));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("expected 52 base32 characters"), "{msg}");
        assert!(msg.contains("ferry id"), "{msg}");

        let bad = text.replacen(|c: char| c.is_ascii_alphabetic(), "1", 1);
        assert!(matches!(
            bad.parse::<DeviceId>(),
            Err(ParseDeviceIdError::BadCharacter { found: '1' })
        ));
        assert!("".parse::<DeviceId>().is_err());
        // 'R' = 17 has a padding bit set: not the canonical form of any id.
        let non_canonical = format!("{}R", "A".repeat(51));
        assert!(matches!(
            non_canonical.parse::<DeviceId>(),
            Err(ParseDeviceIdError::BadLastCharacter { found: 'R' })
        ));
    }

    #[test]
    fn short_is_a_prefix_of_the_text_form() {
        let id = sample();
        assert_eq!(id.short().len(), 8);
        assert!(id.to_string().starts_with(&id.short()));
    }

    #[test]
    fn serde_uses_the_text_form() -> anyhow::Result<()> {
        let id = sample();
        let json = serde_json::to_string(&id)?;
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<DeviceId>(&json)?, id);
        assert!(serde_json::from_str::<DeviceId>("\"nope\"").is_err());
        Ok(())
    }

    #[test]
    fn from_cert_rejects_garbage() {
        assert!(matches!(
            DeviceId::from_cert(b"not a certificate"),
            Err(IdentityError::BadCertificate { .. })
        ));
    }
}
