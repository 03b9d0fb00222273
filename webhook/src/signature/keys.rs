//! ECDSA P-256 keys in the PEM forms cosign reads and writes.
//!
//! - public: `PUBLIC KEY`, a PKIX SubjectPublicKeyInfo (91 bytes for P-256);
//! - private, encrypted (cosign's default): `ENCRYPTED SIGSTORE PRIVATE KEY` (or
//!   `ENCRYPTED COSIGN PRIVATE KEY`, cosign before 2.0.1) around JSON
//!   `{"kdf":{"name":"scrypt","params":{"N","r","p"},"salt"},"cipher":{"name":"nacl/secretbox","nonce"},"ciphertext"}`:
//!   the PKCS#8 key sealed with XSalsa20-Poly1305 under scrypt(password, salt);
//! - private, plain: `PRIVATE KEY` (PKCS#8, e.g. `openssl genpkey -algorithm EC
//!   -pkeyopt ec_paramgen_curve:P-256`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SignatureError;

/// The DER a P-256 SubjectPublicKeyInfo starts with (id-ecPublicKey,
/// prime256v1, a 66-byte BIT STRING); the uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

const PUBLIC_LABEL: &str = "PUBLIC KEY";
const ENCRYPTED_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const OLD_ENCRYPTED_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";

fn error(message: impl Into<String>) -> SignatureError {
    SignatureError(message.into())
}

/// A key that verifies signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point, 65 bytes.
    point: Vec<u8>,
    fingerprint: String,
}

impl PublicKey {
    fn from_point(point: &[u8]) -> Self {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        Self {
            point: point.to_vec(),
            fingerprint: format!("sha256:{:x}", Sha256::digest(&spki)),
        }
    }

    /// Reads a PEM `PUBLIC KEY` of ECDSA P-256.
    pub fn from_pem(text: &str) -> Result<Self, SignatureError> {
        let (label, der) = pem_decode(text)?;
        if label != PUBLIC_LABEL {
            return Err(error(format!(
                "a `{label}` PEM block is not a public key (expected `{PUBLIC_LABEL}`, as \
                 cosign generate-key-pair writes cosign.pub)"
            )));
        }
        if der.len() != 91 || der[..26] != P256_SPKI_PREFIX || der[26] != 0x04 {
            return Err(error(
                "the public key is not ECDSA P-256 (the curve cosign's keys use): stsguard \
                 verifies P-256 signatures only",
            ));
        }
        Ok(Self::from_point(&der[26..]))
    }

    /// The PEM, as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> String {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.point);
        pem_encode(PUBLIC_LABEL, &spki)
    }

    /// `sha256:<hex>` of the SubjectPublicKeyInfo: how a key is named.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` (ASN.1 DER) is this key's ECDSA P-256 SHA-256
    /// signature of `message`. High S values are accepted, as Go (cosign) makes them.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// A key that signs.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The JSON inside an encrypted key, in the field order Go writes.
#[derive(Debug, Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl SigningKey {
    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SignatureError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &SystemRandom::new())
                .map_err(|_| {
                    error(
                        "the private key is not an ECDSA P-256 PKCS#8 key with its public key \
                         (a SEC1 `EC PRIVATE KEY` converts with `openssl pkcs8 -topk8 -nocrypt`)",
                    )
                })?;
        let public = PublicKey::from_point(pair.public_key().as_ref());
        Ok(Self { pair, public })
    }

    /// Reads a cosign encrypted key (decrypted with `password`) or a plain
    /// PKCS#8 `PRIVATE KEY`.
    pub fn from_pem(text: &str, password: &[u8]) -> Result<Self, SignatureError> {
        let (label, der) = pem_decode(text)?;
        match label.as_str() {
            PKCS8_LABEL => Self::from_pkcs8(&der),
            ENCRYPTED_LABEL | OLD_ENCRYPTED_LABEL => Self::from_pkcs8(&decrypt(&der, password)?),
            other => Err(error(format!(
                "a `{other}` PEM block is not a private key stsguard reads (cosign's `{ENCRYPTED_LABEL}`, \
                 or a PKCS#8 `{PKCS8_LABEL}`)"
            ))),
        }
    }

    /// A new key, and its cosign-encrypted PEM (scrypt N=65536 as cosign writes).
    pub fn generate(password: &[u8]) -> Result<(Self, String), SignatureError> {
        let random = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &random)
            .map_err(|_| error("could not generate a key"))?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        let pem = pem_encode(ENCRYPTED_LABEL, &encrypt(pkcs8.as_ref(), password)?);
        Ok((key, pem))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// An ECDSA P-256 SHA-256 signature of `message`, ASN.1 DER.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| error("could not sign"))
    }
}

/// scrypt's work factor as log2(N); only the parameters cosign uses (2^15
/// before 2.2, 2^16 since, 2^17 OWASP) with r=8, p=1: anything else is refused,
/// so that reading a key cannot be made to cost minutes or gigabytes.
fn scrypt_params(params: &ScryptParams) -> Result<scrypt::Params, SignatureError> {
    let log_n = match (params.n, params.r, params.p) {
        (32768, 8, 1) => 15,
        (65536, 8, 1) => 16,
        (131072, 8, 1) => 17,
        (n, r, p) => {
            return Err(error(format!(
                "the key's scrypt parameters N={n}, r={r}, p={p} are not cosign's"
            )));
        }
    };
    scrypt::Params::new(log_n, 8, 1).map_err(|e| error(format!("scrypt: {e}")))
}

fn secret_key(
    password: &[u8],
    salt: &[u8],
    params: &ScryptParams,
) -> Result<[u8; 32], SignatureError> {
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &scrypt_params(params)?, &mut key)
        .map_err(|e| error(format!("scrypt: {e}")))?;
    Ok(key)
}

fn decrypt(json: &[u8], password: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let sealed: EncryptedKey = serde_json::from_slice(json).map_err(|e| {
        error(format!(
            "the encrypted private key is not cosign's JSON: {e}"
        ))
    })?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(error(format!(
            "the private key is sealed with {} and {}; cosign's are scrypt and nacl/secretbox",
            sealed.kdf.name, sealed.cipher.name
        )));
    }
    let decode = |what: &str, text: &str| {
        BASE64
            .decode(text)
            .map_err(|_| error(format!("the private key's {what} is not base64")))
    };
    let salt = decode("salt", &sealed.kdf.salt)?;
    let nonce = decode("nonce", &sealed.cipher.nonce)?;
    let ciphertext = decode("ciphertext", &sealed.ciphertext)?;
    if nonce.len() != 24 {
        return Err(error("the private key's nonce is not 24 bytes"));
    }
    let key = secret_key(password, &salt, &sealed.kdf.params)?;
    XSalsa20Poly1305::new(&key.into())
        .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
        .map_err(|_| {
            error(
                "the private key does not open with this password (COSIGN_PASSWORD; empty when \
                 unset)",
            )
        })
}

fn encrypt(pkcs8: &[u8], password: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let random = SystemRandom::new();
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    random
        .fill(&mut salt)
        .and_then(|()| random.fill(&mut nonce))
        .map_err(|_| error("no randomness"))?;
    let params = ScryptParams {
        n: 65536,
        r: 8,
        p: 1,
    };
    let key = secret_key(password, &salt, &params)?;
    let ciphertext = XSalsa20Poly1305::new(&key.into())
        .encrypt(Nonce::from_slice(&nonce), pkcs8)
        .map_err(|_| error("could not seal the key"))?;
    let sealed = EncryptedKey {
        kdf: Kdf {
            name: "scrypt".into(),
            params,
            salt: BASE64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: BASE64.encode(nonce),
        },
        ciphertext: BASE64.encode(ciphertext),
    };
    serde_json::to_vec(&sealed).map_err(|e| error(e.to_string()))
}

/// PEM as Go writes it: 64 columns, LF, a trailing newline.
pub(super) fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first PEM block of `text`: its label and bytes (CRLF and text around it
/// are fine).
fn pem_decode(text: &str) -> Result<(String, Vec<u8>), SignatureError> {
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| error("no PEM block (-----BEGIN ...-----) in the key"))?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| error("a PEM header without its closing dashes"))?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end = body
        .find(&format!("-----END {label}-----"))
        .ok_or_else(|| error(format!("the PEM block `{label}` has no END line")))?;
    let base64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = BASE64
        .decode(base64)
        .map_err(|_| error(format!("the PEM block `{label}` is not base64")))?;
    Ok((label, der))
}
