//! The formats against cosign's own output (`webhook/tests/fixtures/cosign/`, whose
//! README names where each vector comes from).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cosign")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn key(name: &str) -> PublicKey {
    PublicKey::from_pem(&fixture(name)).unwrap()
}

fn verifier(name: &str) -> Verifier {
    Verifier::new(vec![key(name)], BTreeMap::new())
}

/// The containers/image vector: a manifest, cosign's payload for it, cosign's signature.
fn cosign_signed() -> (String, Signature) {
    let manifest = fixture("containers-image.manifest.json");
    let digest = format!("sha256:{:x}", Sha256::digest(manifest.as_bytes()));
    let payload = fixture("containers-image.payload.json");
    let signature = Signature::new(
        payload.as_bytes(),
        &fixture("containers-image.signature.b64"),
    );
    (digest, signature)
}

#[test]
fn a_signature_cosign_made_verifies() {
    let (digest, signature) = cosign_signed();
    let signer = verifier("containers-image.pub")
        .verify(&digest, &[signature])
        .unwrap();
    assert_eq!(signer.key, key("containers-image.pub").fingerprint());
    assert!(signer.annotations.is_empty());
    // And the busybox one from sigstore-rs.
    let payload = fixture("busybox.payload.json");
    let busybox = Signature::new(payload.as_bytes(), &fixture("busybox.signature.b64"));
    let digest = Payload::parse(payload.as_bytes())
        .unwrap()
        .digest()
        .to_string();
    verifier("busybox.pub").verify(&digest, &[busybox]).unwrap();
}

#[test]
fn the_payload_is_built_byte_for_byte_as_cosign_builds_it() {
    let (digest, _) = cosign_signed();
    let built = build_payload(
        "192.168.64.2:5000/cosign-signed-single-sample",
        &digest,
        &BTreeMap::new(),
    );
    assert_eq!(
        String::from_utf8(built).unwrap(),
        fixture("containers-image.payload.json")
    );
    let annotated = build_payload(
        "r/x",
        &digest,
        &BTreeMap::from([("z".into(), "<&>".into()), ("a".into(), "1".into())]),
    );
    let text = String::from_utf8(annotated).unwrap();
    assert!(
        text.ends_with(r#""optional":{"a":"1","z":"\u003c\u0026\u003e"}}"#),
        "sorted keys, Go's escapes: {text}"
    );
    let parsed = Payload::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.annotations()["z"], "<&>");
}

#[test]
fn wrong_key_other_digest_and_altered_bytes_are_refused_saying_why() {
    let (digest, signature) = cosign_signed();
    let error = verifier("containers-image-other.pub")
        .verify(&digest, std::slice::from_ref(&signature))
        .unwrap_err();
    assert!(error.contains("one made by another key"), "{error}");
    assert!(error.contains("a signature by key sha256:"), "{error}");

    let other = format!("sha256:{}", "0".repeat(64));
    let error = verifier("containers-image.pub")
        .verify(&other, std::slice::from_ref(&signature))
        .unwrap_err();
    assert!(
        error.contains(&format!("covers {digest}, not this module")),
        "{error}"
    );

    let mut altered = fixture("containers-image.payload.json").into_bytes();
    altered[10] ^= 1;
    let tampered = Signature::new(&altered, &signature.signature);
    assert!(
        verifier("containers-image.pub")
            .verify(&digest, &[tampered])
            .is_err()
    );
    let error = verifier("containers-image.pub")
        .verify(&digest, &[])
        .unwrap_err();
    assert_eq!(error, "it is not signed");
}

#[test]
fn required_annotations_must_be_in_the_payload() {
    let (key, _) = SigningKey::generate(b"").unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let annotations = BTreeMap::from([("team".to_string(), "platform".to_string())]);
    let payload = build_payload("r/x", &digest, &annotations);
    let signed = Signature::new(&payload, &BASE64.encode(key.sign(&payload).unwrap()));
    let wants = |value: &str| {
        Verifier::new(
            vec![key.public().clone()],
            BTreeMap::from([("team".to_string(), value.to_string())]),
        )
    };
    let signer = wants("platform")
        .verify(&digest, std::slice::from_ref(&signed))
        .unwrap();
    assert_eq!(signer.annotations, annotations);
    let error = wants("db")
        .verify(&digest, std::slice::from_ref(&signed))
        .unwrap_err();
    assert!(error.contains("without the annotation team=db"), "{error}");
}

#[test]
fn cosign_encrypted_keys_and_plain_pkcs8_keys_sign() {
    let digest = format!("sha256:{}", "b".repeat(64));
    let payload = build_payload("r/x", &digest, &BTreeMap::new());
    for (file, password) in [
        ("cosign-empty-password.key", ""),
        ("cosign-old-password-123.key", "123"),
        ("openssl-p256.pem", ""),
    ] {
        let key = SigningKey::from_pem(&fixture(file), password.as_bytes())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let signature = Signature::new(&payload, &BASE64.encode(key.sign(&payload).unwrap()));
        Verifier::new(vec![key.public().clone()], BTreeMap::new())
            .verify(&digest, &[signature])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let openssl = SigningKey::from_pem(&fixture("openssl-p256.pem"), b"").unwrap();
    assert_eq!(openssl.public(), &key("openssl-p256.pub"));
    let error =
        SigningKey::from_pem(&fixture("cosign-old-password-123.key"), b"wrong").unwrap_err();
    assert!(
        error.0.contains("does not open with this password"),
        "{error}"
    );
}

#[test]
fn a_generated_key_round_trips_through_its_pem() {
    let (key, pem) = SigningKey::generate(b"secret").unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let again = SigningKey::from_pem(&pem, b"secret").unwrap();
    assert_eq!(again.public(), key.public());
    let public = key.public().to_pem();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(&PublicKey::from_pem(&public).unwrap(), key.public());
    assert!(public.lines().all(|line| line.len() <= 64));
}

#[test]
fn keys_that_are_not_p256_or_not_keys_are_named() {
    for (text, says) in [
        ("not a key", "no PEM block"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "is not a public key",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
            "not ECDSA P-256",
        ),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n", "has no END line"),
    ] {
        let error = PublicKey::from_pem(text).unwrap_err();
        assert!(error.0.contains(says), "{text}: {error}");
    }
}

#[test]
fn a_detached_signature_covers_a_file_s_bytes() {
    let (key, _) = SigningKey::generate(b"").unwrap();
    let module = b"\0asm\x0d\0\x01\0 pretend";
    let signature = BASE64.encode(key.sign(module).unwrap());
    let verifier = Verifier::new(vec![key.public().clone()], BTreeMap::new());
    verifier.verify_blob(module, &signature).unwrap();
    assert!(verifier.verify_blob(b"other bytes", &signature).is_err());
}

#[test]
fn the_sig_image_is_named_and_configured_as_cosign_does() {
    assert_eq!(signature_tag("sha256:634a8f35"), "sha256-634a8f35.sig");
    let one = signature_config(&[format!("sha256:{}", "c".repeat(64))]);
    assert_eq!(one.len(), 233, "cosign's config for one layer");
    let two = signature_config(&[
        format!("sha256:{}", "c".repeat(64)),
        format!("sha256:{}", "d".repeat(64)),
    ]);
    assert_eq!(two.len(), 342, "and for two");
    // The probe's config of the containers/image vector's .sig image.
    let (_, signature) = cosign_signed();
    let payload = BASE64.decode(&signature.payload).unwrap();
    let config = signature_config(&[format!("sha256:{:x}", Sha256::digest(&payload))]);
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(&config)),
        "sha256:be321600a5bd794947dce257829a2f08c21b05dde3edf84706faf6f2ae0f5f60"
    );
}
