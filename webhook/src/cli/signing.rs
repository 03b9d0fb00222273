//! Signing policy modules: `stsguard generate-key-pair`, `stsguard sign` and
//! `stsguard verify`, in cosign's formats, so that a team signs with either tool
//! and the server (or `cosign verify`) checks either's signatures.
//!
//! A module in a registry is signed by its manifest digest (a tag is resolved
//! first, and the signature then covers what the tag named at that moment); a
//! module file by its bytes, the signature written beside it as `FILE.sig`.
//! Private keys are cosign's encrypted PEM, opened with `COSIGN_PASSWORD`, so
//! that keys made by `cosign generate-key-pair` work here and the other way
//! round.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::CacheArgs;
use super::registry::{RegistryArgs, block_on};
use crate::registry::OciReference;
use crate::signature::{PublicKey, SigningKey, Verifier, build_payload, file_signature_path};

/// The environment variable cosign reads a private key's password from.
const PASSWORD_VARIABLE: &str = "COSIGN_PASSWORD";

/// What is signed or verified: a module in a registry, or a module file.
#[derive(Debug, Clone)]
pub enum Target {
    Oci(OciReference),
    File(PathBuf),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with(crate::registry::reference::SCHEME) {
            text.parse().map(Self::Oci)
        } else {
            Ok(Self::File(text.into()))
        }
    }
}

/// `KEY=VALUE`, as cosign's `-a`.
fn parse_annotation(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[derive(Debug, clap::Args)]
pub struct GenerateKeyPairArgs {
    /// Write PREFIX.key (the private key, encrypted with the password in
    /// COSIGN_PASSWORD, which may be empty) and PREFIX.pub (the public key, for
    /// the server's verification.keys). Existing files are never overwritten.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    output_key_prefix: PathBuf,
}

pub fn generate_key_pair(args: GenerateKeyPairArgs) -> anyhow::Result<()> {
    let password = std::env::var(PASSWORD_VARIABLE).map_err(|_| {
        anyhow::anyhow!(
            "set {PASSWORD_VARIABLE} to the password that encrypts the private key (it may be \
             empty: COSIGN_PASSWORD= stsguard generate-key-pair); stsguard does not prompt"
        )
    })?;
    let prefix = args.output_key_prefix.display().to_string();
    let (private_path, public_path) = (
        PathBuf::from(format!("{prefix}.key")),
        PathBuf::from(format!("{prefix}.pub")),
    );
    for path in [&private_path, &public_path] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists; stsguard never overwrites a key: move it away or choose another \
             --output-key-prefix",
            path.display()
        );
    }
    let (key, pem) = SigningKey::generate(password.as_bytes())?;
    write_new(&private_path, pem.as_bytes(), 0o600)?;
    write_new(&public_path, key.public().to_pem().as_bytes(), 0o644)?;
    eprintln!(
        "wrote the private key {} (keep it secret) and the public key {} (give it to the server's \
         verification.keys)",
        private_path.display(),
        public_path.display()
    );
    println!("{}", key.public().fingerprint());
    Ok(())
}

/// Writes a file that must not exist yet, with `mode` on Unix.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("could not write {}", path.display()))
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// What to sign: oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:DIGEST), or a
    /// module file (its signature is written to FILE.sig).
    target: Target,
    /// The private key: cosign's encrypted PEM (opened with COSIGN_PASSWORD) or
    /// a PKCS#8 `PRIVATE KEY`, ECDSA P-256.
    #[arg(long, env = "STSGUARD_SIGNING_KEY", value_name = "FILE")]
    key: PathBuf,
    /// An annotation the signature carries, KEY=VALUE (repeat); a server can
    /// require it (verification.annotations). Registry modules only.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    annotations: Vec<(String, String)>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Signs and prints what was signed: the reference pinned to the signed
/// digest, or the signature file.
pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let SignArgs {
        target,
        key,
        annotations,
        registry,
        cache,
    } = args;
    let key = read_signing_key(&key)?;
    let annotations: BTreeMap<String, String> = annotations.into_iter().collect();
    match target {
        Target::Oci(reference) => {
            let registry = registry.registry(&cache)?;
            let digest = block_on(registry.manifest_digest(&reference))
                .map_err(|error| anyhow::anyhow!("could not sign {error}"))?;
            let repository = format!("{}/{}", reference.registry, reference.repository);
            let payload = build_payload(&repository, &digest, &annotations);
            let signature = BASE64.encode(key.sign(&payload)?);
            let added = block_on(registry.push_signature(
                &reference,
                &digest,
                &payload,
                &signature,
                key.public(),
            ))
            .map_err(|error| anyhow::anyhow!("could not push the signature of {error}"))?;
            let pinned = reference.pinned(&digest);
            if added {
                eprintln!("signed {pinned} with key {}", key.public().fingerprint());
            } else {
                eprintln!(
                    "{pinned} already carries this signature by key {}; nothing pushed",
                    key.public().fingerprint()
                );
            }
            println!("{pinned}");
        }
        Target::File(path) => {
            anyhow::ensure!(
                annotations.is_empty(),
                "a file's signature carries no annotations (it is cosign's sign-blob format): sign \
                 it without -a, or push the module and sign its oci:// reference"
            );
            let bytes = std::fs::read(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let signature = BASE64.encode(key.sign(&bytes)?);
            let signature_path = file_signature_path(&path);
            std::fs::write(&signature_path, &signature)
                .with_context(|| format!("could not write {}", signature_path.display()))?;
            eprintln!(
                "signed {} with key {}",
                path.display(),
                key.public().fingerprint()
            );
            println!("{}", signature_path.display());
        }
    }
    Ok(())
}

fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the private key {}", path.display()))?;
    let password = std::env::var(PASSWORD_VARIABLE).unwrap_or_default();
    SigningKey::from_pem(&text, password.as_bytes())
        .with_context(|| format!("could not use the private key {}", path.display()))
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// What to verify: oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:DIGEST), or a
    /// module file (with its signature in FILE.sig).
    target: Target,
    /// A trusted public key, PEM (repeat: any of them may have signed).
    #[arg(long, required = true, value_name = "FILE")]
    key: Vec<PathBuf>,
    /// An annotation the signature must carry, KEY=VALUE (repeat).
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    annotations: Vec<(String, String)>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Prints who signed the target and exits 0, or says why no signature verifies
/// and exits 1; 2 when it could not be checked.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let VerifyArgs {
        target,
        key,
        annotations,
        registry,
        cache,
    } = args;
    let keys = key
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read the public key {}", path.display()))?;
            PublicKey::from_pem(&text)
                .with_context(|| format!("could not use the public key {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let verifier = Verifier::new(keys, annotations.into_iter().collect());
    let (subject, verdict) = match target {
        Target::Oci(reference) => {
            let registry = registry.registry(&cache)?;
            let digest = block_on(registry.manifest_digest(&reference))
                .map_err(|error| anyhow::anyhow!("could not verify {error}"))?;
            let signatures = block_on(registry.signatures(&reference, &digest))
                .map_err(|error| anyhow::anyhow!("could not read the signatures of {error}"))?;
            (
                reference.pinned(&digest).to_string(),
                verifier.verify(&digest, &signatures),
            )
        }
        Target::File(path) => {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let signature_path = file_signature_path(&path);
            let verdict = match std::fs::read_to_string(&signature_path) {
                Ok(signature) => verifier.verify_blob(&bytes, &signature),
                Err(error) => Err(format!(
                    "its signature {} could not be read ({error})",
                    signature_path.display()
                )),
            };
            (path.display().to_string(), verdict)
        }
    };
    match verdict {
        Ok(signer) => {
            println!("{subject}: verified, signed by {signer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("{subject}: not verified: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_reference_only_with_the_oci_scheme() {
        assert!(matches!(
            "oci://127.0.0.1:5000/p/x:1".parse::<Target>(),
            Ok(Target::Oci(_))
        ));
        assert!(matches!(
            "build/x.wasm".parse::<Target>(),
            Ok(Target::File(path)) if path == Path::new("build/x.wasm")
        ));
        assert!("oci://no-repository".parse::<Target>().is_err());
    }

    #[test]
    fn annotations_are_key_equals_value() {
        assert_eq!(
            parse_annotation("team=platform=core"),
            Ok(("team".into(), "platform=core".into()))
        );
        assert_eq!(
            parse_annotation("team="),
            Ok(("team".into(), String::new()))
        );
        assert!(parse_annotation("team").is_err());
        assert!(parse_annotation("=x").is_err());
    }
}
