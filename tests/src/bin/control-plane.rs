//! `control-plane COMMAND...`: runs COMMAND against a throw-away Kubernetes control
//! plane started from `$KUBEBUILDER_ASSETS` (see `stsguard_e2e::control_plane`), with
//! `KUBECONFIG` set, and exits with COMMAND's exit code. `STSGUARD_E2E_KEEP=1` keeps
//! the plane's state dir (logs, certificates, etcd data) for a look.

use stsguard_e2e::control_plane::{self, Assets};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let command: Vec<String> = std::env::args().skip(1).collect();
    let keep = std::env::var_os("STSGUARD_E2E_KEEP").is_some();
    let result = match Assets::from_env() {
        Ok(assets) => control_plane::run_command(&assets, &command, keep).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("control-plane: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
