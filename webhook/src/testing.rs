//! Paths the tests of this crate share: the test-only policies the build script
//! compiled, and a compilation cache so each component compiles once per build.

use std::path::PathBuf;

/// The scripted test policy (`policies/testing/scripted`).
pub fn scripted_policy() -> PathBuf {
    PathBuf::from(env!("STSGUARD_TEST_POLICY_DIR")).join("test_policy_scripted.wasm")
}

/// A compilation cache under the target directory, shared by test runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("STSGUARD_TEST_POLICY_DIR")).join("cache")
}
