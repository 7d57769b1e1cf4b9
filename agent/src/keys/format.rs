//! The text of key files and public files: a magic first line, then
//! `name: value` lines (hex values), `#` comment lines ignored. Parsing
//! checks shape only (lengths, the key id against the public half); the
//! cryptography is in `lock`.

use ferry_proto::seal::FolderPublic;

/// The first line of a key file.
pub(super) const KEY_MAGIC: &str = "ferry folder key v1";
/// The first line of a public file.
pub(super) const PUBLIC_MAGIC: &str = "ferry folder public key v1";

/// Bytes of the AES-256-GCM tag after the sealed secret.
pub(super) const TAG: usize = 16;

/// Argon2id's cost parameters, as written in a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KdfParams {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// What `ferry key new` writes: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// The most a file may ask for (a damaged or hostile file must not make
    /// the loader allocate without bound): 2 GiB, 64 passes, 16 lanes.
    const MAX: KdfParams = KdfParams {
        m_kib: 2 * 1024 * 1024,
        t: 64,
        p: 16,
    };
}

/// The secret half as a key file keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SealedSecret {
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    pub nonce: [u8; 12],
    /// `FolderSecret::to_bytes()` sealed, then the tag.
    pub sealed: [u8; 64 + TAG],
}

/// A file's content, parsed.
pub(super) enum Parsed {
    Key {
        public: FolderPublic,
        secret: SealedSecret,
    },
    Public(FolderPublic),
}

/// Why a file's text is not a key file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Problem {
    /// The first line is neither magic.
    NotFerry,
    /// A Ferry key file, but this line is missing or wrong.
    Damaged(&'static str),
}

pub(super) fn parse(text: &str) -> Result<Parsed, Problem> {
    let mut lines = text.lines();
    let magic = lines.next().map(str::trim_end).ok_or(Problem::NotFerry)?;
    let is_key = match magic {
        KEY_MAGIC => true,
        PUBLIC_MAGIC => false,
        _ => return Err(Problem::NotFerry),
    };
    let fields: Vec<(&str, &str)> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once(':')
                .map_or((l, ""), |(k, v)| (k.trim(), v.trim()))
        })
        .collect();
    let field = |name: &'static str| {
        let mut found = fields.iter().filter(|(k, _)| *k == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Ok(*v),
            _ => Err(Problem::Damaged(name)),
        }
    };
    let public =
        FolderPublic::from_bytes(&hex_array(field("public")?).ok_or(Problem::Damaged("public"))?);
    let key_id: [u8; 32] = hex_array(field("key-id")?).ok_or(Problem::Damaged("key-id"))?;
    if key_id != public.key_id() {
        return Err(Problem::Damaged("key-id"));
    }
    if !is_key {
        return Ok(Parsed::Public(public));
    }
    let kdf = parse_kdf(field("kdf")?).ok_or(Problem::Damaged("kdf"))?;
    let secret = SealedSecret {
        kdf,
        salt: hex_array(field("salt")?).ok_or(Problem::Damaged("salt"))?,
        nonce: hex_array(field("nonce")?).ok_or(Problem::Damaged("nonce"))?,
        sealed: hex_array(field("sealed-secret")?).ok_or(Problem::Damaged("sealed-secret"))?,
    };
    Ok(Parsed::Key { public, secret })
}

/// `argon2id m=65536 t=3 p=1`, within [`KdfParams::MAX`].
fn parse_kdf(text: &str) -> Option<KdfParams> {
    let mut words = text.split_whitespace();
    if words.next()? != "argon2id" {
        return None;
    }
    let mut value = |name: &str| -> Option<u32> {
        words
            .next()?
            .strip_prefix(name)?
            .strip_prefix('=')?
            .parse()
            .ok()
    };
    let kdf = KdfParams {
        m_kib: value("m")?,
        t: value("t")?,
        p: value("p")?,
    };
    let max = KdfParams::MAX;
    let within = (1..=max.t).contains(&kdf.t)
        && (1..=max.p).contains(&kdf.p)
        && (8 * kdf.p..=max.m_kib).contains(&kdf.m_kib);
    (words.next().is_none() && within).then_some(kdf)
}

/// The text of a public file.
pub(super) fn render_public(public: &FolderPublic) -> String {
    format!(
        "{PUBLIC_MAGIC}\n\
         # The public half of a Ferry folder key: a write-only sender seals with it\n\
         # and cannot open anything. Restoring needs the key file it came from.\n\
         key-id: {}\n\
         public: {}\n",
        hex(&public.key_id()),
        hex(&public.to_bytes()),
    )
}

/// The text of a key file.
pub(super) fn render_key(public: &FolderPublic, secret: &SealedSecret) -> String {
    let KdfParams { m_kib, t, p } = secret.kdf;
    format!(
        "{KEY_MAGIC}\n\
         # A Ferry folder key, its secret half sealed under a passphrase.\n\
         # Losing this file or its passphrase loses the folder's data: keep a copy\n\
         # elsewhere (a USB stick, a password manager).\n\
         key-id: {}\n\
         public: {}\n\
         kdf: argon2id m={m_kib} t={t} p={p}\n\
         salt: {}\n\
         nonce: {}\n\
         sealed-secret: {}\n",
        hex(&public.key_id()),
        hex(&public.to_bytes()),
        hex(&secret.salt),
        hex(&secret.nonce),
        hex(&secret.sealed),
    )
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Exactly `N` bytes of hex (either case), or `None`.
fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_exact() {
        let bytes = [0x00, 0x7f, 0xa5, 0xff];
        assert_eq!(hex(&bytes), "007fa5ff");
        assert_eq!(hex_array::<4>("007FA5ff"), Some(bytes));
        assert_eq!(hex_array::<4>("007fa5f"), None);
        assert_eq!(hex_array::<4>("007fa5fg"), None);
        assert_eq!(hex_array::<4>("+07fa5ff"), None);
        assert_eq!(hex_array::<3>("007fa5ff"), None);
    }

    #[test]
    fn kdf_parameters_parse_within_bounds_only() {
        assert_eq!(
            parse_kdf("argon2id m=65536 t=3 p=1"),
            Some(KdfParams::DEFAULT)
        );
        for bad in [
            "argon2i m=65536 t=3 p=1",
            "argon2id m=65536 t=3",
            "argon2id m=65536 t=3 p=1 x=2",
            "argon2id t=3 m=65536 p=1",
            "argon2id m=4 t=3 p=1",
            "argon2id m=65536 t=0 p=1",
            "argon2id m=4294967295 t=3 p=1",
            "argon2id m=65536 t=3 p=99",
        ] {
            assert_eq!(parse_kdf(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_that_is_not_a_ferry_file_is_told_apart_from_a_damaged_one() {
        for text in [
            "",
            "hello\n",
            "-----BEGIN PRIVATE KEY-----\n",
            "ferry folder key v2\n",
        ] {
            assert!(matches!(parse(text), Err(Problem::NotFerry)), "{text:?}");
        }
        assert!(matches!(
            parse("ferry folder public key v1\nkey-id: 00\n"),
            Err(Problem::Damaged("public"))
        ));
    }
}
