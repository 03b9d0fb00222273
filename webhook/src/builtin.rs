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

/// The kinds of cluster objects each built-in reads, as its metadata declares
/// them: what the default chain grants it (`webhook/tests/golden.rs` checks
/// this table against the components' own metadata).
pub fn reads(name: &str) -> Vec<stsguard_contract::cluster::ResourceKind> {
    use stsguard_contract::cluster::ResourceKind;
    match name {
        "headless-service" => vec![ResourceKind::new("v1", "Service")],
        "storage-class" => vec![ResourceKind::new("storage.k8s.io/v1", "StorageClass")],
        "disruption-budget" => vec![ResourceKind::new("policy/v1", "PodDisruptionBudget")],
        _ => Vec::new(),
    }
}
