//! The `counter-app` command line: every flag also read from an environment variable, so the
//! chart can configure the app with `env:` alone.
//!
//! [`Args::run`] destructures the arguments, so a new flag that is not wired up fails to
//! compile, then starts the app: time zone, pod name and visit count are checked before the
//! port is bound, so a misconfigured pod fails fast with a message instead of serving.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::clock::{Clock, UnknownTimeZone};
use crate::counter::{Counter, CounterConfig, OpenError, Storage};
use crate::metrics::Metrics;
use crate::pod::{InvalidPodName, Pod};
use crate::server::{self, AppState, BindError, ServeError};

/// The StatefulSet lab's visit counter, done right: shows the time, counts visits durably in
/// one file on the pod's volume, and never counts probes.
#[derive(Debug, Parser)]
#[command(name = "counter-app", version, max_term_width = 100)]
pub struct Args {
    /// Address and port to serve HTTP on.
    #[arg(long, env = "COUNTER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The file that holds the count: one decimal number. Its directory must exist (on a
    /// cluster: the volume's mount point); the file is created on the first visit.
    #[arg(long, env = "COUNTER_VISITS_FILE", default_value = "/data/visits")]
    pub visits_file: PathBuf,

    /// IANA time zone of the time shown on the page.
    #[arg(long, env = "COUNTER_TIME_ZONE", default_value = "Europe/Moscow")]
    pub time_zone: String,

    /// Name of the serving pod, sent in the x-pod-name header and shown on the page
    /// [default: the host name].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// How visits are written. `naive` is the course labs' read-increment-write-fsync per
    /// visit, kept only as a benchmark baseline: it is slow and not crash-safe.
    #[arg(long, env = "COUNTER_STORAGE", value_enum, default_value_t = Storage::GroupCommit)]
    pub storage: Storage,

    /// Group commits allowed in flight at once (their fsyncs overlap; renames stay in order).
    #[arg(
        long,
        env = "COUNTER_COMMIT_THREADS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u8).range(1..=64)
    )]
    pub commit_threads: u8,

    /// Log format: human-readable text or one JSON object per line. The level is set with
    /// COUNTER_LOG (a tracing filter, default `info`).
    #[arg(long, env = "COUNTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// For log collectors.
    Json,
}

/// Why the app stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `--time-zone` is not a known zone.
    #[error(transparent)]
    TimeZone(#[from] UnknownTimeZone),
    /// `POD_NAME` is not usable.
    #[error(transparent)]
    Pod(#[from] InvalidPodName),
    /// The visit count could not be loaded.
    #[error(transparent)]
    Counter(#[from] OpenError),
    /// The listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl Args {
    /// Starts the app and serves until SIGTERM or SIGINT.
    pub async fn run(self) -> Result<(), RunError> {
        let Self {
            listen,
            visits_file,
            time_zone,
            pod_name,
            storage,
            commit_threads,
            log_format: _, // used by main to set up logging
        } = self;
        let clock = Clock::new(&time_zone)?;
        let pod = Pod::resolve(pod_name)?;
        let metrics = Metrics::new();
        let counter = Counter::open(
            CounterConfig {
                path: visits_file,
                storage,
                commit_threads: usize::from(commit_threads),
            },
            metrics.storage.clone(),
        )?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|cause| BindError {
                addr: listen,
                cause,
            })?;
        let state = AppState::new(counter, clock, pod, metrics);
        server::run(listener, state, server::shutdown_signal()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_issue() {
        let args = Args::try_parse_from(["counter-app"]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.visits_file, PathBuf::from("/data/visits"));
        assert_eq!(args.time_zone, "Europe/Moscow");
        assert_eq!(args.storage, Storage::GroupCommit);
    }

    #[test]
    fn help_names_every_environment_variable() {
        let help = Args::command().render_long_help().to_string();
        for var in [
            "COUNTER_LISTEN",
            "COUNTER_VISITS_FILE",
            "COUNTER_TIME_ZONE",
            "POD_NAME",
            "COUNTER_STORAGE",
        ] {
            assert!(help.contains(var), "{var} missing from\n{help}");
        }
    }
}
