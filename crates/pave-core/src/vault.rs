//! Envelope encryption for credentials: each secret has its own random data
//! key (AES-256-GCM); the data key is stored wrapped by the master key. Rotating
//! the master key re-wraps data keys without touching the secrets.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes256Gcm;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the vault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VaultError {
    /// The master key is not 32 bytes of hex.
    #[error("the master key must be 64 hex characters (32 bytes)")]
    BadMasterKey,
    /// Decryption failed: wrong key or tampered data.
    #[error("a secret could not be decrypted (wrong master key, or the stored secret was modified)")]
    Decrypt,
    /// The stored secret is malformed.
    #[error("a stored secret is malformed: {0}")]
    Malformed(String),
}

/// A secret as stored: nothing in it is readable without the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The data key, encrypted with the master key (hex).
    pub wrapped_key: String,
    /// Nonce of the wrapping (hex).
    pub key_nonce: String,
    /// The value, encrypted with the data key (hex).
    pub ciphertext: String,
    /// Nonce of the value (hex).
    pub nonce: String,
}

/// The master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>, VaultError> {
    hex::decode(s).map_err(|_| VaultError::Malformed(format!("{what} is not hex")))
}

impl MasterKey {
    /// From the 64 hex characters of the key file.
    pub fn from_hex(s: &str) -> Result<Self, VaultError> {
        let bytes = hex::decode(s.trim()).map_err(|_| VaultError::BadMasterKey)?;
        if bytes.len() != 32 {
            return Err(VaultError::BadMasterKey);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(MasterKey(key))
    }

    /// A new random key, as hex.
    pub fn generate_hex() -> String {
        hex::encode(random::<32>())
    }

    /// Encrypts `plaintext` under a fresh data key.
    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let data_key = random::<32>();
        let nonce = random::<12>();
        let key_nonce = random::<12>();
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ciphertext = Aes256Gcm::new(&data_key.into())
            .encrypt(&nonce.into(), plaintext)
            .unwrap_or_default();
        let wrapped = Aes256Gcm::new(&self.0.into())
            .encrypt(&key_nonce.into(), &data_key[..])
            .unwrap_or_default();
        Sealed {
            wrapped_key: hex::encode(wrapped),
            key_nonce: hex::encode(key_nonce),
            ciphertext: hex::encode(ciphertext),
            nonce: hex::encode(nonce),
        }
    }

    /// The same secret with its data key wrapped by `new` instead: the value's
    /// ciphertext is not touched (rotating the master key).
    pub fn rewrap(&self, s: &Sealed, new: &MasterKey) -> Result<Sealed, VaultError> {
        let data_key = self.unwrap_key(s)?;
        let key_nonce = random::<12>();
        let wrapped = Aes256Gcm::new(&new.0.into())
            .encrypt(&key_nonce.into(), &data_key[..])
            .map_err(|_| VaultError::Decrypt)?;
        Ok(Sealed {
            wrapped_key: hex::encode(wrapped),
            key_nonce: hex::encode(key_nonce),
            ciphertext: s.ciphertext.clone(),
            nonce: s.nonce.clone(),
        })
    }

    fn unwrap_key(&self, s: &Sealed) -> Result<[u8; 32], VaultError> {
        let key_nonce: [u8; 12] = unhex(&s.key_nonce, "key nonce")?
            .try_into()
            .map_err(|_| VaultError::Malformed("nonce length".into()))?;
        Aes256Gcm::new(&self.0.into())
            .decrypt(
                &key_nonce.into(),
                unhex(&s.wrapped_key, "wrapped key")?.as_slice(),
            )
            .map_err(|_| VaultError::Decrypt)?
            .try_into()
            .map_err(|_| VaultError::Decrypt)
    }

    /// Decrypts a sealed secret.
    pub fn open(&self, s: &Sealed) -> Result<Vec<u8>, VaultError> {
        let nonce12 = |v: Vec<u8>| -> Result<[u8; 12], VaultError> {
            v.try_into()
                .map_err(|_| VaultError::Malformed("nonce length".into()))
        };
        let nonce = nonce12(unhex(&s.nonce, "nonce")?)?;
        let data_key = self.unwrap_key(s)?;
        Aes256Gcm::new(&data_key.into())
            .decrypt(&nonce.into(), unhex(&s.ciphertext, "ciphertext")?.as_slice())
            .map_err(|_| VaultError::Decrypt)
    }
}

/// A random password of `len` URL-safe characters.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let b = random::<1>()[0] as usize;
        if b < limit {
            out.push(ALPHABET[b % ALPHABET.len()] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_only() {
        let k = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let s = k.seal(b"hunter2");
        assert!(!s.ciphertext.contains(&hex::encode(b"hunter2")));
        assert_eq!(k.open(&s).unwrap(), b"hunter2");
        let other = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        assert_eq!(other.open(&s), Err(VaultError::Decrypt));
        let mut tampered = s.clone();
        tampered
            .ciphertext
            .replace_range(0..2, if &s.ciphertext[0..2] == "00" { "01" } else { "00" });
        assert_eq!(k.open(&tampered), Err(VaultError::Decrypt));
    }

    #[test]
    fn a_bad_master_key_is_refused_and_never_printed() {
        assert_eq!(MasterKey::from_hex("abcd").unwrap_err(), VaultError::BadMasterKey);
        let k = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        assert_eq!(format!("{k:?}"), "MasterKey(***)");
        assert_eq!(random_password(24).len(), 24);
    }

    #[test]
    fn a_rewrapped_secret_opens_with_the_new_key_only() {
        let old = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let new = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let sealed = old.seal(b"hunter22");
        let moved = old.rewrap(&sealed, &new).unwrap();
        assert_eq!(moved.ciphertext, sealed.ciphertext);
        assert_eq!(new.open(&moved).unwrap(), b"hunter22");
        assert!(old.open(&moved).is_err());
        assert!(new.rewrap(&sealed, &old).is_err());
    }
}
