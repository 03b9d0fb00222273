//! The built-in policies, compiled from `policies/` by the build script and
//! embedded in the binary, so `stsguard serve` works with no files at all.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The component bytes of the built-in policy `name`.
pub fn module(name: &str) -> Option<&'static [u8]> {
    BUILTIN_MODULES
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, bytes)| *bytes)
}

/// The built-ins' names, in the default chain order.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN_MODULES.iter().map(|(name, _)| *name)
}
