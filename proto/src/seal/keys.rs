//! Folder keys, their public half, the key id, opaque paths, and the run
//! and object key derivations of the spec (`super`'s doc).

use super::{RandomnessError, PREFIX};
use crate::{Hash, RelPath};
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

const KEY_ID_CONTEXT: &str = "ferry 2026-11 seal v1 key id";
const NAMES_CONTEXT: &str = "ferry 2026-11 seal v1 names";
const RUN_KEY_CONTEXT: &str = "ferry 2026-11 seal v1 run key";
const OBJECT_KEY_CONTEXT: &str = "ferry 2026-11 seal v1 object key";

/// A folder key: opens objects. Zeroed when dropped.
#[derive(Clone)]
pub struct FolderSecret {
    sk: StaticSecret,
    ns: Zeroizing<[u8; 32]>,
}

/// The public half of a folder key: seals objects and names them. The
/// naming secret in it is zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct FolderPublic {
    pk: PublicKey,
    ns: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FolderSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderSecret").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FolderPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderPublic").finish_non_exhaustive()
    }
}

/// Fills `bytes` from the operating system's randomness.
pub(super) fn random(bytes: &mut [u8]) -> Result<(), RandomnessError> {
    SystemRandom::new().fill(bytes).map_err(|_| RandomnessError)
}

/// Splits `a ‖ b` of 64 bytes.
fn halves(bytes: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&bytes[..32]);
    b.copy_from_slice(&bytes[32..]);
    (a, b)
}

impl FolderSecret {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<FolderSecret, RandomnessError> {
        let mut bytes = Zeroizing::new([0u8; 64]);
        random(&mut bytes[..])?;
        Ok(FolderSecret::from_bytes(&bytes))
    }

    /// `sk ‖ ns`.
    pub fn from_bytes(bytes: &[u8; 64]) -> FolderSecret {
        let (sk, ns) = halves(bytes);
        let sk = Zeroizing::new(sk);
        FolderSecret {
            sk: StaticSecret::from(*sk),
            ns: Zeroizing::new(ns),
        }
    }

    /// `sk ‖ ns`. Zero the copy when done with it.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.sk.as_bytes());
        out[32..].copy_from_slice(&self.ns[..]);
        out
    }

    pub fn public(&self) -> FolderPublic {
        FolderPublic {
            pk: PublicKey::from(&self.sk),
            ns: self.ns.clone(),
        }
    }

    /// `R` for an object sealed under the ephemeral public key `ephemeral`,
    /// or `None` if the shared secret is not contributory.
    pub(super) fn run_key(&self, ephemeral: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.sk.diffie_hellman(&PublicKey::from(*ephemeral));
        shared.was_contributory().then(|| {
            run_key(
                shared.as_bytes(),
                ephemeral,
                PublicKey::from(&self.sk).as_bytes(),
            )
        })
    }
}

impl FolderSecret {
    /// `X25519(sk, public)`, or `None` if it is not contributory.
    pub(super) fn agree(&self, public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.sk.diffie_hellman(&PublicKey::from(*public));
        shared
            .was_contributory()
            .then(|| Zeroizing::new(*shared.as_bytes()))
    }
}

impl FolderPublic {
    /// `(E, X25519(e, pk))` for the secret `e`, or `None` if the shared
    /// secret is not contributory.
    pub(super) fn agree(&self, secret: [u8; 32]) -> Option<([u8; 32], Zeroizing<[u8; 32]>)> {
        let secret = StaticSecret::from(secret);
        let e_public = PublicKey::from(&secret);
        let shared = secret.diffie_hellman(&self.pk);
        shared
            .was_contributory()
            .then(|| (*e_public.as_bytes(), Zeroizing::new(*shared.as_bytes())))
    }

    /// `pk ‖ ns`.
    pub fn from_bytes(bytes: &[u8; 64]) -> FolderPublic {
        let (pk, ns) = halves(bytes);
        FolderPublic {
            pk: PublicKey::from(pk),
            ns: Zeroizing::new(ns),
        }
    }

    /// `pk ‖ ns`.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.pk.as_bytes());
        out[32..].copy_from_slice(&self.ns[..]);
        out
    }

    /// The key id the receiver pins per folder.
    pub fn key_id(&self) -> Hash {
        let bytes = Zeroizing::new(self.to_bytes());
        blake3::derive_key(KEY_ID_CONTEXT, &bytes[..])
    }

    /// The opaque path an entry's objects are stored at.
    pub fn opaque_path(&self, path: &RelPath) -> RelPath {
        let names = Zeroizing::new(blake3::derive_key(NAMES_CONTEXT, &self.ns[..]));
        let id = blake3::keyed_hash(&names, path.as_bytes());
        let mut out = Vec::with_capacity(33);
        for (i, byte) in id.as_bytes()[..16].iter().enumerate() {
            if i == 1 {
                out.push(b'/');
            }
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
        match RelPath::from_bytes(out) {
            Ok(opaque) => opaque,
            // Two components of lowercase hex digits (2 and 30 of them) are
            // always a valid path: no empty, `.` or `..` component, no NUL,
            // 33 bytes.
            Err(_) => unreachable!("an opaque path is two hex components"),
        }
    }

    /// The naming secret `ns`: the root of the chunked objects' keys.
    pub(super) fn ns(&self) -> &[u8; 32] {
        &self.ns
    }

    /// `pk`.
    pub(super) fn pk(&self) -> &PublicKey {
        &self.pk
    }

    /// `(E, R)` for the ephemeral secret `ephemeral`, or `None` if the
    /// shared secret is not contributory (`pk` is a low-order point).
    pub(super) fn run_key(
        &self,
        ephemeral: StaticSecret,
    ) -> Option<([u8; 32], Zeroizing<[u8; 32]>)> {
        let e_public = PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&self.pk);
        drop(ephemeral);
        shared.was_contributory().then(|| {
            let r = run_key(shared.as_bytes(), e_public.as_bytes(), self.pk.as_bytes());
            (*e_public.as_bytes(), r)
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `R = derive_key(run key, shared ‖ E ‖ pk)`.
fn run_key(shared: &[u8; 32], ephemeral: &[u8; 32], pk: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut material = Zeroizing::new([0u8; 96]);
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(pk);
    Zeroizing::new(blake3::derive_key(RUN_KEY_CONTEXT, &material[..]))
}

/// An AES-256-GCM key from 32 derived bytes.
pub(super) fn aead_key(key: &[u8; 32]) -> ring::aead::LessSafeKey {
    match ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key[..]) {
        Ok(key) => ring::aead::LessSafeKey::new(key),
        // ring refuses only a key of the wrong length; this one is 32 bytes,
        // AES-256's length.
        Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
    }
}

/// The AES-256-GCM key of one object: `K = derive_key(object key, R ‖
/// salt)`, where `salt` is the last 16 bytes of the object's prefix.
pub(super) fn object_key(run: &[u8; 32], prefix: &[u8; PREFIX]) -> ring::aead::LessSafeKey {
    let mut material = Zeroizing::new([0u8; 48]);
    material[..32].copy_from_slice(run);
    material[32..].copy_from_slice(&prefix[PREFIX - 16..]);
    let key = Zeroizing::new(blake3::derive_key(OBJECT_KEY_CONTEXT, &material[..]));
    match ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key[..]) {
        Ok(key) => ring::aead::LessSafeKey::new(key),
        // ring refuses only a key of the wrong length; this one is 32 bytes,
        // AES-256's length.
        Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
    }
}
