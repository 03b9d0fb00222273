//! Which port a probe checks: a container port's name or number.

use std::fmt;

use stsguard_policy::k8s_openapi::api::core::v1::ContainerPort;
use stsguard_policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::view::Container;

/// A port as a probe names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A port number, 1–65535.
    Number(i32),
    /// A container port's name (an IANA service name such as `http`).
    Name(String),
}

impl PortRef {
    /// Reads an annotation or setting: digits are a number, anything else a name.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<i32>() {
                Ok(n) => Self::number(n),
                Err(_) => Err(format!("port {text} is out of range 1-65535")),
            };
        }
        Self::name(text)
    }

    /// From a JSON setting, which may be a number or a string.
    pub fn from_int_or_string(value: &IntOrString) -> Result<Self, String> {
        match value {
            IntOrString::Int(n) => Self::number(*n),
            IntOrString::String(s) => Self::parse(s),
        }
    }

    fn number(n: i32) -> Result<Self, String> {
        if (1..=65535).contains(&n) {
            Ok(Self::Number(n))
        } else {
            Err(format!("port {n} is out of range 1-65535"))
        }
    }

    /// A name must be an IANA service name, as Kubernetes requires of port names:
    /// at most 15 characters of `a-z`, `0-9` and `-`, with at least one letter,
    /// no `-` at either end and no `--`.
    fn name(name: &str) -> Result<Self, String> {
        let valid = (1..=15).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name.bytes().any(|b| b.is_ascii_lowercase())
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if valid {
            Ok(Self::Name(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is neither a port number nor a port name (up to 15 of a-z, 0-9 and '-', with a letter)"
            ))
        }
    }

    /// Whether `port` is this one (by name or by number).
    fn matches(&self, port: &ContainerPort) -> bool {
        match self {
            Self::Number(n) => port.container_port == *n,
            Self::Name(name) => port.name.as_deref() == Some(name),
        }
    }

    /// The probe's `port` field.
    pub fn to_int_or_string(&self) -> IntOrString {
        match self {
            Self::Number(n) => IntOrString::Int(*n),
            Self::Name(name) => IntOrString::String(name.clone()),
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// The container's TCP ports (protocol unset means TCP), in declaration order.
fn tcp_ports(container: &Container) -> impl Iterator<Item = &ContainerPort> {
    container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
}

/// Whether the container declares `wanted` as a TCP port.
pub fn declares(container: &Container, wanted: &PortRef) -> bool {
    tcp_ports(container).any(|p| wanted.matches(p))
}

/// The container's first declared TCP port, by name when it has one (so the probe
/// follows the port if its number changes).
pub fn first_declared(container: &Container) -> Option<PortRef> {
    tcp_ports(container).next().map(|p| match &p.name {
        Some(name) if !name.is_empty() => PortRef::Name(name.clone()),
        _ => PortRef::Number(p.container_port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_read_and_checked() {
        assert_eq!(PortRef::parse("8080"), Ok(PortRef::Number(8080)));
        assert_eq!(PortRef::parse("http"), Ok(PortRef::Name("http".into())));
        assert_eq!(
            PortRef::parse("metrics-2"),
            Ok(PortRef::Name("metrics-2".into()))
        );
        for bad in [
            "0",
            "65536",
            "99999999999",
            "",
            "HTTP",
            "-http",
            "http-",
            "a--b",
            "a-very-long-port-name",
            "8080/tcp",
            "12-34",
        ] {
            assert!(PortRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            PortRef::from_int_or_string(&IntOrString::Int(9090)),
            Ok(PortRef::Number(9090))
        );
        assert!(PortRef::from_int_or_string(&IntOrString::Int(-1)).is_err());
    }

    #[test]
    fn only_tcp_ports_count() {
        let port = |name: &str, number, protocol: Option<&str>| ContainerPort {
            name: (!name.is_empty()).then(|| name.to_owned()),
            container_port: number,
            protocol: protocol.map(str::to_owned),
            ..Default::default()
        };
        let container = Container {
            ports: Some(vec![
                port("dns", 53, Some("UDP")),
                port("", 8080, None),
                port("admin", 9000, Some("TCP")),
            ]),
            ..Default::default()
        };
        assert_eq!(first_declared(&container), Some(PortRef::Number(8080)));
        assert!(declares(&container, &PortRef::Name("admin".into())));
        assert!(declares(&container, &PortRef::Number(9000)));
        assert!(!declares(&container, &PortRef::Name("dns".into())));
        assert_eq!(first_declared(&Container::default()), None);
    }
}
