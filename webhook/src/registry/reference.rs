//! `oci://HOST[:PORT]/REPO:TAG`, `oci://HOST[:PORT]/REPO@sha256:DIGEST`, or both:
//! where a policy module lives in a registry.
//!
//! The host is always written out: there is no implicit registry (Docker Hub or
//! another) a policy could be fetched from by surprise. And a tag or a digest is
//! required: `latest` by default would make "which policy runs" depend on when a
//! pod last started.

use std::fmt;
use std::str::FromStr;

/// Where a policy module lives in a registry, as written in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OciReference {
    /// `HOST[:PORT]`, as the registry is reached (and as credentials are keyed).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`: the manifest's digest, which the pulled one must match.
    pub digest: Option<String>,
}

pub const SCHEME: &str = "oci://";

impl OciReference {
    /// The same artifact, pinned to the manifest `digest` (what a tag resolved to).
    pub fn pinned(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The same repository and tag, without a digest: what is asked of the
    /// registry to learn where the tag points now.
    pub fn tag_only(&self) -> Option<Self> {
        self.tag.as_ref().map(|_| Self {
            digest: None,
            ..self.clone()
        })
    }

    /// The oci-client form: a digest, when there is one, wins over the tag.
    pub(super) fn to_client(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            (None, Some(tag)) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
            ),
            (None, None) => unreachable!("parsing requires a tag or a digest"),
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for OciReference {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| {
            format!(
                "`{text}` is not an OCI reference: {why} (expected \
                 oci://HOST[:PORT]/REPOSITORY:TAG or oci://HOST[:PORT]/REPOSITORY@sha256:DIGEST)"
            )
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("it does not start with oci://"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|why| invalid(&why))?;
                (rest, Some(digest.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("it names no repository after the registry host"))?;
        check_registry(registry).map_err(|why| invalid(&why))?;
        // A tag follows the last `:` of the path (a port is in the host part).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => {
                check_tag(tag).map_err(|why| invalid(&why))?;
                (repository, Some(tag.to_string()))
            }
            None => (path, None),
        };
        check_repository(repository).map_err(|why| invalid(&why))?;
        if tag.is_none() && digest.is_none() {
            return Err(invalid(
                "it has neither a tag nor a digest; stsguard never assumes `latest`",
            ));
        }
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

/// A host name or address, with an optional port.
fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !host_ok {
        return Err(format!("`{registry}` is not a registry host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{port}` is not a port"));
    }
    Ok(())
}

/// The distribution spec's `<name>`: lower-case path components separated by
/// `/`, each alphanumerics joined by `.`, `_`, `__` or dashes.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |component: &str| {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        !bytes.is_empty()
            && alnum(bytes[0])
            && alnum(bytes[bytes.len() - 1])
            && bytes
                .iter()
                .all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
    };
    if repository.is_empty() || !repository.split('/').all(component_ok) {
        return Err(format!(
            "`{repository}` is not a repository name (lower-case letters, digits and \
             `.`, `_`, `-` between them, components separated by `/`)"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{tag}` is not a tag"))
    }
}

/// `sha256:` and 64 lower-case hex digits: the only digest stsguard checks.
pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{digest}` is not a digest (sha256: and 64 lower-case hex digits)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tags_digests_and_ports_are_read() {
        let tagged: OciReference = "oci://registry.example.com/policies/probes:v1.2"
            .parse()
            .unwrap();
        assert_eq!(tagged.registry, "registry.example.com");
        assert_eq!(tagged.repository, "policies/probes");
        assert_eq!(tagged.tag.as_deref(), Some("v1.2"));
        assert_eq!(tagged.digest, None);

        let both: OciReference = format!("oci://127.0.0.1:5000/team/rule:stable@{DIGEST}")
            .parse()
            .unwrap();
        assert_eq!(both.registry, "127.0.0.1:5000");
        assert_eq!(both.repository, "team/rule");
        assert_eq!(both.tag.as_deref(), Some("stable"));
        assert_eq!(both.digest.as_deref(), Some(DIGEST));
        assert_eq!(
            both.to_string(),
            format!("oci://127.0.0.1:5000/team/rule:stable@{DIGEST}")
        );

        let pinned: OciReference = format!("oci://localhost:5000/rule@{DIGEST}")
            .parse()
            .unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.tag_only(), None);
        assert_eq!(tagged.pinned(DIGEST).to_client().digest(), Some(DIGEST));
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (text, why) in [
            (
                "oci://registry.example.com/probes",
                "neither a tag nor a digest",
            ),
            ("oci://registry.example.com:probes", "names no repository"),
            (
                "oci://registry.example.com/Probes:v1",
                "not a repository name",
            ),
            ("oci://registry.example.com/probes:-v1", "not a tag"),
            (
                "oci://registry.example.com/probes@sha256:abc",
                "not a digest",
            ),
            ("oci://registry.example.com/probes@md5:abc", "not a digest"),
            ("oci://registry.example.com:99999/probes:v1", "not a port"),
            ("oci:///probes:v1", "not a registry host"),
            (
                "registry.example.com/probes:v1",
                "does not start with oci://",
            ),
            (
                "oci://registry.example.com/a//b:v1",
                "not a repository name",
            ),
        ] {
            let error = text.parse::<OciReference>().unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
            assert!(
                error.contains("oci://HOST[:PORT]/REPOSITORY:TAG"),
                "{error}"
            );
        }
    }
}
