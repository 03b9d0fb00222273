//! Pulled artifacts on disk, under `<cache-dir>/oci/`, so that a restart with
//! the registry down still serves every policy it pulled before.
//!
//! Content-addressed: `blobs/sha256/<hex>` (components) and
//! `manifests/sha256/<hex>`, each checked against its name when read (a file
//! that does not match is removed and treated as missing, never served); and
//! `tags/<registry>/<repository>/<tag>`, the digest a tag last resolved to, used
//! only when the registry cannot be asked; and `signatures/sha256/<hex>`, the
//! signatures last fetched for an artifact (JSON: payloads and signatures), so
//! that a start with the registry down can still check them — they are
//! verified again, with the keys of the day, every time they are used. Files are written to a temporary name
//! and renamed, so a crash mid-write leaves no torn entry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::artifact::sha256;
use super::reference::{OciReference, check_digest};

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    root: PathBuf,
}

impl ArtifactCache {
    /// The cache under `cache_dir` (created when first written).
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            root: cache_dir.join("oci"),
        }
    }

    pub fn manifest(&self, digest: &str) -> Option<Vec<u8>> {
        self.read_checked(&self.path("manifests", digest)?, digest)
    }

    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.read_checked(&self.path("blobs", digest)?, digest)
    }

    pub fn store_manifest(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.store("manifests", digest, bytes)
    }

    pub fn store_blob(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.store("blobs", digest, bytes)
    }

    /// The signatures last fetched for the artifact `digest`.
    pub fn signatures(&self, digest: &str) -> Option<Vec<crate::signature::Signature>> {
        let bytes = std::fs::read(self.path("signatures", digest)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn store_signatures(
        &self,
        digest: &str,
        signatures: &[crate::signature::Signature],
    ) -> std::io::Result<()> {
        let json = serde_json::to_vec(signatures).map_err(std::io::Error::other)?;
        self.store("signatures", digest, &json)
    }

    /// The digest `reference`'s tag last resolved to, if it was ever pulled.
    pub fn tag(&self, reference: &OciReference) -> Option<String> {
        let digest = std::fs::read_to_string(self.tag_path(reference)?).ok()?;
        let digest = digest.trim();
        check_digest(digest).ok()?;
        Some(digest.to_string())
    }

    pub fn store_tag(&self, reference: &OciReference, digest: &str) -> std::io::Result<()> {
        match self.tag_path(reference) {
            Some(path) => write_atomically(&path, digest.as_bytes()),
            None => Ok(()),
        }
    }

    fn tag_path(&self, reference: &OciReference) -> Option<PathBuf> {
        // The reference's parts were checked when it was parsed: no `..`, no `/`
        // in the registry or tag.
        let tag = reference.tag.as_ref()?;
        Some(
            self.root
                .join("tags")
                .join(&reference.registry)
                .join(&reference.repository)
                .join(tag),
        )
    }

    fn path(&self, kind: &str, digest: &str) -> Option<PathBuf> {
        check_digest(digest).ok()?;
        let hex = digest.strip_prefix("sha256:")?;
        Some(self.root.join(kind).join("sha256").join(hex))
    }

    fn store(&self, kind: &str, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self
            .path(kind, digest)
            .ok_or_else(|| std::io::Error::other(format!("`{digest}` is not a sha256 digest")))?;
        write_atomically(&path, bytes)
    }

    fn read_checked(&self, path: &Path, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(path).ok()?;
        if sha256(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "a cached artifact does not match its digest; removed");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Writes `bytes` beside `path` under a name no other writer uses (pulls run in
/// parallel, and two servers may share a cache), then renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}.{}.partial",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_only_when_they_match_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path());
        let digest = sha256(b"component");
        assert_eq!(cache.blob(&digest), None);
        cache.store_blob(&digest, b"component").unwrap();
        assert_eq!(cache.blob(&digest).as_deref(), Some(&b"component"[..]));

        // A corrupted entry is removed, not served.
        let path = cache.path("blobs", &digest).unwrap();
        std::fs::write(&path, b"tampered").unwrap();
        assert_eq!(cache.blob(&digest), None);
        assert!(!path.exists());
        assert!(cache.store_blob("sha256:nothex", b"x").is_err());
    }

    #[test]
    fn tags_remember_their_last_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path());
        let reference: OciReference = "oci://127.0.0.1:5000/team/rule:stable".parse().unwrap();
        assert_eq!(cache.tag(&reference), None);
        let digest = sha256(b"manifest");
        cache.store_tag(&reference, &digest).unwrap();
        assert_eq!(cache.tag(&reference), Some(digest));
        let pinned: OciReference = format!("oci://127.0.0.1:5000/team/rule@{}", sha256(b"m"))
            .parse()
            .unwrap();
        assert_eq!(cache.tag(&pinned), None);
    }
}
