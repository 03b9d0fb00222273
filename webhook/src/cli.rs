//! The `stsguard` command line: `serve`, `eval`, `audit`, `test`, `inspect`, `push`,
//! `pull`, `generate-key-pair`, `sign`, `verify`, `new`, `build`, `policies`, `compile`, `bench`.
//!
//! Every flag can also come from an environment variable (named in `--help`), so
//! the same binary is configured by flags on a laptop and by env in a Pod.

mod audit;
mod bench;
mod build;
mod compile;
mod eval;
mod inspect;
mod json_log;
mod log_output;
mod manifests;
mod new;
mod outcome;
mod policies;
mod project;
mod registry;
mod serve;
mod signing;
mod smoke_test;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::EngineOptions;

/// Kubernetes admission webhook that makes StatefulSets follow best practice,
/// with rules written as sandboxed WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "stsguard", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "STSGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter, in tracing's `EnvFilter` syntax (e.g. `info`,
    /// `stsguard_webhook=debug`) [default: `info` for serve; `warn` for eval, audit and
    /// policies, whose output is for people, and for bench, whose in-process
    /// server would otherwise log every review it is measuring].
    #[arg(long, env = "STSGUARD_LOG", global = true)]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a policy project: `stsguard new NAME --lang rust|python|javascript`
    /// writes NAME/ with the source, the WIT, a test suite, an example
    /// manifest, a config to serve it and a README.
    New(new::NewArgs),
    /// Build the policy project in DIR (default: here) with its language's
    /// toolchain into one component, build/NAME.wasm, and print its path.
    Build(build::BuildArgs),
    /// Serve admission reviews over HTTPS (POST /mutate, /mutate/{policy};
    /// GET /healthz, /readyz, /metrics).
    Serve(serve::ServeArgs),
    /// Run the policy chain offline on manifests: prints the mutated objects as
    /// YAML on stdout and warnings and denials on stderr; exits 0 when every
    /// object is allowed, 1 when one is denied, 2 on an error. For CI and GitOps.
    Eval(eval::EvalArgs),
    /// Run the policy chain on the StatefulSets a cluster already has (from the
    /// kubeconfig or the pod's service account), each as a dry-run CREATE: per
    /// object compliant, would-mutate, would-deny or error; with --write-reports
    /// also a PolicyReport per namespace. Exits 0 when every object is compliant,
    /// 1 (--findings-exit-code) when one is not, 2 when the audit could not list
    /// them all (an incomplete report says INCOMPLETE) or write its reports.
    Audit(audit::AuditArgs),
    /// List the built-in policies, what they do, and their settings.
    Policies(policies::PoliciesArgs),
    /// Describe a `.wasm` file: the contract version and world it was built
    /// for, its imports and exports, size and sha256, and a policy's metadata
    /// and settings schema. Exits 0 for a policy this stsguard serves, 1 for
    /// any other WebAssembly (saying what it is and what is expected), 2 on an
    /// error.
    Inspect(inspect::InspectArgs),
    /// Push a policy component to an OCI registry as a WebAssembly artifact
    /// (the CNCF layout); prints the reference pinned to its digest.
    Push(registry::PushArgs),
    /// Pull a policy component from an OCI registry into a file; prints the
    /// reference pinned to its digest.
    Pull(registry::PullArgs),
    /// Make a key pair to sign policies with: PREFIX.key, encrypted with
    /// COSIGN_PASSWORD, and PREFIX.pub; cosign reads them, and stsguard reads
    /// cosign's.
    GenerateKeyPair(signing::GenerateKeyPairArgs),
    /// Sign a policy in cosign's format: an oci:// module by its manifest digest
    /// (the signature joins its `sha256-<hex>.sig` image, as `cosign sign`
    /// writes), a module file by its bytes (into FILE.sig, as `cosign sign-blob`).
    /// Prints the pinned reference or the signature file.
    Sign(signing::SignArgs),
    /// Check a policy's signature as the server's verification section does:
    /// prints who signed it and exits 0; exits 1 when no signature verifies
    /// (saying why), 2 when it could not be checked.
    Verify(signing::VerifyArgs),
    /// Run declarative test suites (tests.yaml) through the real engine: per
    /// case an object or request, and the verdict, warnings, patch or object
    /// expected. Exits 0 when every case passed, 1 when one failed, 2 when a
    /// suite could not run.
    Test(test::TestArgs),
    /// Check from inside the cluster that the API server calls the webhook: a
    /// server-side dry run of a lab StatefulSet must come back with probes and
    /// Parallel, one without claim templates must be denied (what `helm test` runs).
    SmokeTest(smoke_test::SmokeTestArgs),
    /// Compile the configured policies (default: the built-ins) into the
    /// compilation cache and exit. Run it when a container image is built and
    /// point --cache-seed at the result: a new pod then starts without compiling.
    Compile(compile::CompileArgs),
    /// Load-test a server with admission reviews over HTTP/2 and TLS; reports
    /// throughput and latency percentiles.
    Bench(bench::BenchArgs),
}

impl Command {
    /// The subcommand as typed, for error messages.
    fn name(&self) -> &'static str {
        match self {
            Self::Serve(_) => "serve",
            Self::New(_) => "new",
            Self::Build(_) => "build",
            Self::Eval(_) => "eval",
            Self::Audit(_) => "audit",
            Self::Inspect(_) => "inspect",
            Self::Test(_) => "test",
            Self::Push(_) => "push",
            Self::Pull(_) => "pull",
            Self::GenerateKeyPair(_) => "generate-key-pair",
            Self::Sign(_) => "sign",
            Self::Verify(_) => "verify",
            Self::Policies(_) => "policies",
            Self::Compile(_) => "compile",
            Self::SmokeTest(_) => "smoke-test",
            Self::Bench(_) => "bench",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Options about the compilation cache, shared by the commands that load policies.
#[derive(Debug, Clone, clap::Args)]
struct CacheArgs {
    /// Where compiled policies are cached between runs, keyed by the module's
    /// digest and the engine version. Default: $XDG_CACHE_HOME/stsguard or
    /// ~/.cache/stsguard.
    #[arg(long, env = "STSGUARD_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every policy at start-up instead of using the cache.
    #[arg(long, env = "STSGUARD_NO_CACHE")]
    no_cache: bool,
    /// A read-only compilation cache to start from (the image's, made by
    /// `stsguard compile`): what --cache-dir lacks is copied from it at start.
    /// Entries that do not match this stsguard and its engine settings are
    /// never used.
    #[arg(long, env = "STSGUARD_CACHE_SEED")]
    cache_seed: Option<PathBuf>,
    /// Compile policies for the CPU architecture's baseline instead of this
    /// machine's CPU features, so that a cache filled on one machine serves every
    /// other of the architecture: what an image's --cache-seed needs (the image
    /// sets it). Evaluations are ~15-30% slower.
    #[arg(long, env = "STSGUARD_PORTABLE_CODE")]
    portable_code: bool,
}

/// How `serve` reads the cluster for the policies that read it.
#[derive(Debug, Clone, clap::Args)]
struct ClusterArgs {
    /// Whether policies may read cluster objects: `auto` when a kubeconfig
    /// (KUBECONFIG, ~/.kube/config) or the pod's service account gives a
    /// cluster (the default chain then includes the built-ins that read it),
    /// `off` never.
    #[arg(
        long,
        env = "STSGUARD_CLUSTER_ACCESS",
        value_enum,
        default_value = "auto"
    )]
    cluster_access: crate::cluster::Access,
    /// How long /readyz (and a reload) waits for the first list of each kind
    /// the policies read; after it, the server serves and those reads fail
    /// until the kind syncs (each policy's failurePolicy decides).
    #[arg(long, env = "STSGUARD_CLUSTER_SYNC_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    cluster_sync_timeout: std::time::Duration,
}

impl ClusterArgs {
    fn options(&self) -> crate::cluster::ClusterOptions {
        crate::cluster::ClusterOptions {
            access: self.cluster_access,
            sync_timeout: self.cluster_sync_timeout,
        }
    }
}

impl CacheArgs {
    /// The cache folder, whether or not compiled policies are cached (pulled
    /// artifacts always are: they are what a restart without the registry serves).
    fn dir(&self) -> Option<PathBuf> {
        self.cache_dir.clone().or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .map(|dir| dir.join("stsguard"))
        })
    }

    fn engine_options(self) -> EngineOptions {
        let cache_dir = if self.no_cache { None } else { self.dir() };
        let CacheArgs {
            cache_seed,
            portable_code,
            ..
        } = self;
        EngineOptions {
            cache_dir,
            cache_seed,
            portable: portable_code,
            ..EngineOptions::default()
        }
    }
}

impl Cli {
    /// Installs the log subscriber. Wasmtime and Cranelift are quiet unless asked.
    /// Keep what it returns until the process ends: dropping it writes out the
    /// lines still queued (see `log_output`).
    pub fn init_tracing(&self) -> log_output::FlushOnDrop {
        let default = match self.command {
            Command::Serve(_) => "info",
            Command::New(_)
            | Command::Build(_)
            | Command::Push(_)
            | Command::Pull(_)
            | Command::GenerateKeyPair(_)
            | Command::Sign(_)
            | Command::Verify(_) => "warn",
            Command::Compile(_) => "info",
            Command::SmokeTest(_) => "warn",
            // kube's client logs each failed connection as an error of its own;
            // the audit says what failed, and that it retries, itself.
            Command::Audit(_) => "warn,kube_client=off",
            Command::Eval(_)
            | Command::Policies(_)
            | Command::Inspect(_)
            | Command::Test(_)
            | Command::Bench(_) => "warn",
        };
        let log = self.log.as_deref().unwrap_or(default);
        let filter = tracing_subscriber::EnvFilter::try_new(format!(
            "cranelift=warn,wasmtime=warn,wasmtime_cranelift=warn,{log}"
        ))
        .unwrap_or_else(|error| {
            eprintln!("stsguard: ignoring the log filter `{log}`: {error}");
            tracing_subscriber::EnvFilter::new(default)
        });
        let (output, flush) = log_output::LogOutput::start(std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(output)
            // Colour only for a person at a terminal who has not asked for none
            // (NO_COLOR): escape codes in a log file or a container's log are
            // noise, and cost formatting on every line.
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
            );
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder
                .fmt_fields(json_log::JsonFields)
                .event_format(json_log::JsonLines)
                .init(),
        }
        flush
    }

    /// Runs the command; the exit code says how it went.
    pub fn run(self) -> ExitCode {
        let name = self.command.name();
        let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
        // Commands that judge something (eval, inspect, test, audit) choose 0 or 1
        // themselves; every error is 2, reported here.
        let result = match self.command {
            Command::Serve(args) => done(serve::run(args)),
            Command::New(args) => done(new::run(args)),
            Command::Build(args) => done(build::run(args)),
            Command::Eval(args) => eval::run(args),
            Command::Audit(args) => Ok(audit::run(args)),
            Command::Inspect(args) => inspect::run(args),
            Command::Test(args) => test::run(args),
            Command::Push(args) => done(registry::push(args)),
            Command::Pull(args) => done(registry::pull(args)),
            Command::GenerateKeyPair(args) => done(signing::generate_key_pair(args)),
            Command::Sign(args) => done(signing::sign(args)),
            Command::Verify(args) => signing::verify(args),
            Command::Policies(args) => done(policies::run(args)),
            Command::Compile(args) => done(compile::run(args)),
            Command::SmokeTest(args) => done(smoke_test::run(args)),
            Command::Bench(args) => done(bench::run(args)),
        };
        match result {
            Ok(code) => code,
            Err(error) => {
                tracing::error!("{error:#}");
                eprintln!("stsguard {name}: {error:#}");
                ExitCode::from(2)
            }
        }
    }
}
