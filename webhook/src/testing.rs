//! What the tests of this crate share: the test-only policies the build script
//! compiled, a compilation cache so each component compiles once per build, and
//! one engine using it.

use std::path::PathBuf;

/// The scripted test policy (`policies/testing/scripted`), built against the
/// frozen 0.2.0 contract.
pub fn scripted_policy() -> PathBuf {
    PathBuf::from(env!("STSGUARD_TEST_POLICY_DIR")).join("test_policy_scripted.wasm")
}

/// The cluster-reading test policy (`policies/testing/reader`), contract 0.3.
pub fn reader_policy() -> PathBuf {
    PathBuf::from(env!("STSGUARD_TEST_POLICY_DIR")).join("test_policy_reader.wasm")
}

/// A compilation cache under the target directory, shared by test runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("STSGUARD_TEST_POLICY_DIR")).join("cache")
}

/// One engine per test process, with the shared compilation cache.
pub fn engine() -> &'static crate::engine::Engine {
    static ENGINE: std::sync::OnceLock<crate::engine::Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        crate::engine::Engine::new(&crate::engine::EngineOptions {
            cache_dir: Some(cache_dir()),
            ..crate::engine::EngineOptions::default()
        })
        .expect("the test engine starts")
    })
}
