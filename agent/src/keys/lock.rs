//! The passphrase lock of a key file: a 32-byte key from Argon2id over the
//! passphrase and the salt, and the folder secret sealed with AES-256-GCM
//! under it, the magic line and the public half as associated data.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::format::{KdfParams, SealedSecret, KEY_MAGIC, TAG};

/// Why a lock could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum LockError {
    /// The system's random generator failed.
    #[error("the system gave no randomness")]
    Random,
    /// Argon2 refused its parameters or input.
    #[error("the passphrase key cannot be derived")]
    Kdf(#[source] argon2::Error),
    /// The tag did not verify: another passphrase, or a changed file.
    #[error("the sealed secret does not open")]
    Open,
}

/// The associated data: what the sealed secret is bound to.
fn aad(public: &[u8; 64]) -> Vec<u8> {
    let mut aad = KEY_MAGIC.as_bytes().to_vec();
    aad.extend_from_slice(public);
    aad
}

fn cipher(passphrase: &[u8], salt: &[u8; 16], kdf: KdfParams) -> Result<LessSafeKey, LockError> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).map_err(LockError::Kdf)?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(LockError::Kdf)?;
    // AES-256-GCM takes exactly a 32-byte key, which `key` is: this cannot fail.
    let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| LockError::Open)?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals `secret` (bound to `public`) under `passphrase`, with a fresh salt
/// and nonce. Blocking: Argon2id takes `kdf.m_kib` KiB and a good fraction
/// of a second.
pub(super) fn seal(
    secret: &[u8; 64],
    public: &[u8; 64],
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<SealedSecret, LockError> {
    let random = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    random.fill(&mut salt).map_err(|_| LockError::Random)?;
    random.fill(&mut nonce).map_err(|_| LockError::Random)?;
    let key = cipher(passphrase, &salt, kdf)?;
    let mut in_out = Zeroizing::new([0u8; 64 + TAG]);
    in_out[..64].copy_from_slice(secret);
    let (plain, tag_out) = in_out.split_at_mut(64);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(public)),
            plain,
        )
        // Sealing fails only for inputs longer than GCM allows; 64 bytes is not.
        .map_err(|_| LockError::Open)?;
    tag_out.copy_from_slice(tag.as_ref());
    Ok(SealedSecret {
        kdf,
        salt,
        nonce,
        sealed: *in_out,
    })
}

/// Opens `sealed` (bound to `public`) with `passphrase`. Blocking, as
/// [`seal`].
pub(super) fn open(
    sealed: &SealedSecret,
    public: &[u8; 64],
    passphrase: &[u8],
) -> Result<Zeroizing<[u8; 64]>, LockError> {
    let key = cipher(passphrase, &sealed.salt, sealed.kdf)?;
    let mut in_out = Zeroizing::new(sealed.sealed);
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(aad(public)),
            in_out.as_mut(),
        )
        .map_err(|_| LockError::Open)?;
    let mut secret = Zeroizing::new([0u8; 64]);
    if plain.len() != 64 {
        return Err(LockError::Open);
    }
    secret.copy_from_slice(plain);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small costs: the tests are about the lock, not Argon2's strength.
    const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn sealed_opens_with_its_passphrase_and_public_half_only() {
        let secret = [7u8; 64];
        let public = [9u8; 64];
        let sealed = seal(&secret, &public, b"pass", CHEAP).unwrap();
        assert_eq!(*open(&sealed, &public, b"pass").unwrap(), secret);
        assert!(matches!(
            open(&sealed, &public, b"Pass"),
            Err(LockError::Open)
        ));
        assert!(matches!(
            open(&sealed, &[8u8; 64], b"pass"),
            Err(LockError::Open)
        ));
        let mut flipped = sealed.clone();
        flipped.sealed[3] ^= 1;
        assert!(matches!(
            open(&flipped, &public, b"pass"),
            Err(LockError::Open)
        ));
        let other = KdfParams { t: 2, ..CHEAP };
        let changed = SealedSecret {
            kdf: other,
            ..sealed.clone()
        };
        assert!(matches!(
            open(&changed, &public, b"pass"),
            Err(LockError::Open)
        ));
        // Fresh salt and nonce each time.
        let again = seal(&secret, &public, b"pass", CHEAP).unwrap();
        assert_ne!(again.salt, sealed.salt);
        assert_ne!(again.sealed, sealed.sealed);
    }
}
