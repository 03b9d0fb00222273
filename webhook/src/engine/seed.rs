//! Seeding the compilation cache from one filled when the image was built.
//!
//! Compiling the three built-ins takes seconds (10.5 s of a new pod's 9–15 s to
//! Ready, measured on a cluster, because the cache is an emptyDir and every pod
//! started cold). `stsguard compile` fills a cache at image build time; at start
//! the server copies what its writable cache lacks from that read-only copy, so
//! wasmtime finds every built-in compiled. wasmtime keys its cache by the
//! component, the engine's settings and its own version, so a stale or foreign
//! seed is never used wrongly: its entries simply do not match, and the policy
//! compiles as before.

use std::io;
use std::path::Path;

/// Copies every file under `seed` that `cache` lacks (same relative path),
/// each written to a temporary name and renamed, so a crash never leaves half
/// a file. Problems are logged, never fatal: without the seed the server
/// compiles, as it would with an empty cache.
pub(super) fn fill(seed: &Path, cache: &Path) {
    match copy_missing(seed, cache) {
        Ok(0) => {
            tracing::debug!(seed = %seed.display(), "the compilation cache has every seeded entry")
        }
        Ok(copied) => tracing::info!(
            seed = %seed.display(),
            cache = %cache.display(),
            copied,
            "seeded the compilation cache"
        ),
        Err(error) => tracing::warn!(
            seed = %seed.display(),
            %error,
            "could not seed the compilation cache; policies not in it are compiled at start"
        ),
    }
}

/// The files copied.
fn copy_missing(seed: &Path, cache: &Path) -> io::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(seed)? {
        let entry = entry?;
        // wasmtime's own bookkeeping (`.cleanup.wip-<pid>`) belongs to the
        // process that wrote it, not to the cache.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let (from, to) = (entry.path(), cache.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&to)?;
            copied += copy_missing(&from, &to)?;
        } else if kind.is_file() && !to.exists() {
            let partial = to.with_extension("seeding");
            std::fs::copy(&from, &partial)?;
            std::fs::rename(&partial, &to)?;
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_what_is_missing_and_keeps_what_is_there() {
        let (seed, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(seed.path().join("modules/v48")).unwrap();
        std::fs::write(seed.path().join("modules/v48/a"), "seeded a").unwrap();
        std::fs::write(seed.path().join("modules/v48/b"), "seeded b").unwrap();
        std::fs::write(seed.path().join(".cleanup.wip-7"), "").unwrap();
        std::fs::create_dir_all(cache.path().join("modules/v48")).unwrap();
        std::fs::write(cache.path().join("modules/v48/b"), "own b").unwrap();
        assert_eq!(copy_missing(seed.path(), cache.path()).unwrap(), 1);
        let read = |name: &str| std::fs::read_to_string(cache.path().join(name)).unwrap();
        assert_eq!(read("modules/v48/a"), "seeded a");
        assert_eq!(read("modules/v48/b"), "own b", "what the cache has wins");
        assert!(!cache.path().join(".cleanup.wip-7").exists());
        assert_eq!(copy_missing(seed.path(), cache.path()).unwrap(), 0);
    }

    #[test]
    fn a_missing_seed_is_an_error_to_log_not_a_panic() {
        let cache = tempfile::tempdir().unwrap();
        let error = copy_missing(Path::new("/nonexistent/seed"), cache.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        fill(Path::new("/nonexistent/seed"), cache.path());
    }
}
