//! Building the probes the policy adds, and checking the ones a user wrote.

use stsguard_policy::k8s_openapi::api::core::v1::{HTTPGetAction, Probe, TCPSocketAction};

use crate::port::PortRef;
use crate::settings::Timing;

/// How a probe checks the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Opens a TCP connection: safe for any server.
    TcpSocket { port: PortRef },
    /// `GET path` over plain HTTP; only when the user named the path.
    HttpGet { path: String, port: PortRef },
}

impl Handler {
    /// A fully specified probe: every timing field, exactly one handler.
    /// `successThreshold` is 1, the only value a liveness probe may have.
    pub fn probe(&self, timing: Timing) -> Probe {
        let mut probe = Probe {
            initial_delay_seconds: Some(timing.initial_delay_seconds),
            period_seconds: Some(timing.period_seconds),
            timeout_seconds: Some(timing.timeout_seconds),
            success_threshold: Some(1),
            failure_threshold: Some(timing.failure_threshold),
            ..Probe::default()
        };
        match self {
            Self::TcpSocket { port } => {
                probe.tcp_socket = Some(TCPSocketAction {
                    port: port.to_int_or_string(),
                    host: None,
                });
            }
            Self::HttpGet { path, port } => {
                probe.http_get = Some(HTTPGetAction {
                    path: Some(path.clone()),
                    port: port.to_int_or_string(),
                    scheme: Some("HTTP".to_owned()),
                    ..HTTPGetAction::default()
                });
            }
        }
        probe
    }

    /// For warnings: `tcpSocket on port http`, `httpGet /readyz on port 8080`.
    pub fn describe(&self) -> String {
        match self {
            Self::TcpSocket { port } => format!("tcpSocket on port {port}"),
            Self::HttpGet { path, port } => format!("httpGet {path} on port {port}"),
        }
    }
}

/// Problems in a probe the user wrote that the API server accepts but that make
/// every pod fail to be created. Each is one short sentence.
pub fn problems(probe: &Probe, field: &str, liveness: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let handlers = [
        probe.exec.is_some(),
        probe.grpc.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
    ]
    .into_iter()
    .filter(|&h| h)
    .count();
    if handlers != 1 {
        problems.push(format!(
            "{field} has {handlers} handlers but needs exactly one of exec, grpc, httpGet, tcpSocket"
        ));
    }
    if liveness
        && let Some(n) = probe.success_threshold
        && n != 1
    {
        problems.push(format!("{field} has successThreshold {n} but it must be 1"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use stsguard_policy::k8s_openapi::api::core::v1::ExecAction;

    use super::*;
    use crate::settings::READINESS_DEFAULTS;

    #[test]
    fn a_built_probe_is_fully_specified_with_one_handler() {
        let tcp = Handler::TcpSocket {
            port: PortRef::Name("http".into()),
        }
        .probe(READINESS_DEFAULTS);
        assert_eq!(tcp.initial_delay_seconds, Some(5));
        assert_eq!(tcp.period_seconds, Some(10));
        assert_eq!(tcp.timeout_seconds, Some(2));
        assert_eq!(tcp.success_threshold, Some(1));
        assert_eq!(tcp.failure_threshold, Some(3));
        assert!(problems(&tcp, "p", true).is_empty());
        let http = Handler::HttpGet {
            path: "/readyz".into(),
            port: PortRef::Number(8080),
        }
        .probe(READINESS_DEFAULTS);
        let get = http.http_get.as_ref().unwrap();
        assert_eq!(
            (get.path.as_deref(), get.scheme.as_deref()),
            (Some("/readyz"), Some("HTTP"))
        );
        assert!(http.tcp_socket.is_none() && problems(&http, "p", true).is_empty());
    }

    #[test]
    fn a_broken_user_probe_is_reported() {
        let none = Probe {
            period_seconds: Some(5),
            ..Probe::default()
        };
        assert_eq!(
            problems(&none, "livenessProbe", true),
            [
                "livenessProbe has 0 handlers but needs exactly one of exec, grpc, httpGet, tcpSocket"
            ]
        );
        let two = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            tcp_socket: Some(TCPSocketAction {
                port: PortRef::Number(1).to_int_or_string(),
                host: None,
            }),
            success_threshold: Some(2),
            ..Probe::default()
        };
        assert_eq!(problems(&two, "livenessProbe", true).len(), 2);
        assert_eq!(
            problems(&two, "readinessProbe", false).len(),
            1,
            "readiness may need several successes"
        );
    }
}
