//! Which pod is serving: every response names it, so a client behind a Service can tell the
//! replicas (and their separate counts) apart.
//!
//! The name comes from `POD_NAME` (the chart sets it from the downward API), else the host
//! name, which Kubernetes sets to the pod name. The host name is read from
//! `/proc/sys/kernel/hostname` (this crate forbids `unsafe`, so no `gethostname(2)`), then
//! `/etc/hostname`, then `$HOSTNAME`.

use axum::http::HeaderValue;

/// The response header that names the serving pod.
pub const HEADER: &str = "x-pod-name";

/// The configured pod name is not usable in a header.
#[derive(Debug, thiserror::Error)]
#[error("pod name {name:?} cannot be sent in the {HEADER} header: use visible ASCII only")]
pub struct InvalidPodName {
    /// What was configured.
    pub name: String,
}

/// The serving pod's name and its header value.
#[derive(Debug, Clone)]
pub struct Pod {
    name: String,
    header: HeaderValue,
}

impl Pod {
    /// `explicit` if given (from `--pod-name` / `POD_NAME`), else the host name.
    pub fn resolve(explicit: Option<String>) -> Result<Self, InvalidPodName> {
        let name = explicit
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .or_else(host_name)
            .unwrap_or_else(|| "unknown".to_owned());
        Self::new(name)
    }

    /// A pod called `name`.
    pub fn new(name: String) -> Result<Self, InvalidPodName> {
        match HeaderValue::from_str(&name) {
            Ok(header) if name.bytes().all(|b| b.is_ascii_graphic()) => Ok(Self { name, header }),
            _ => Err(InvalidPodName { name }),
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a header value.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_name_wins_and_blank_falls_back_to_the_host_name() {
        assert_eq!(Pod::resolve(Some("web-2".into())).unwrap().name(), "web-2");
        let fallback = Pod::resolve(Some("  ".into())).unwrap();
        assert!(!fallback.name().trim().is_empty());
        assert_eq!(fallback.header().to_str().unwrap(), fallback.name());
    }

    #[test]
    fn names_that_cannot_be_a_header_are_refused() {
        assert!(Pod::new("web 0".into()).is_err());
        assert!(Pod::new("web\n0".into()).is_err());
        assert!(Pod::new("веб-0".into()).is_err());
    }
}
