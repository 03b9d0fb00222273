//! Hot reload: notices when the config file, a policy module it names, or the
//! certificate files change, and swaps in the new version without a restart.
//!
//! Files are polled (every `reloadInterval`) rather than watched with inotify:
//! Kubernetes updates mounted ConfigMaps and Secrets by swapping a symlink, which
//! file-watch APIs report inconsistently, while a changed (size, mtime, inode) of
//! the resolved file is reliable everywhere and costs one `stat` per file.
//!
//! A new policy set is compiled and validated in the background; only a set that
//! loads completely replaces the one being served. A broken change is logged and
//! counted, the old set keeps serving, and the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::chain::PolicySet;
use crate::config::{Config, ModuleSource};
use crate::engine::Engine;
use crate::server::{AppState, Served};
use crate::tls::ReloadingCertificate;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Option<(u64, SystemTime, u64)>);

impl Fingerprint {
    fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(std::fs::metadata(path).ok().map(|m| {
            (
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.ino(),
            )
        }))
    }
}

/// The version of each watched file as last seen.
///
/// Record it *before* the files are read: a change that lands while they are
/// being read (a Secret or ConfigMap updated during a slow start) is then seen at
/// the first poll, instead of becoming the baseline and being missed.
#[derive(Debug, Default)]
pub struct FileVersions(Vec<(PathBuf, Fingerprint)>);

impl FileVersions {
    /// The files' versions now.
    pub fn now(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut versions = Self::default();
        versions.watch(paths);
        versions
    }

    /// Watches exactly `paths` from now on: a file already watched keeps the
    /// version last seen (so a change not yet acted on is not lost), a new one is
    /// recorded now, one no longer named is dropped.
    pub fn watch(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        let mut old = std::mem::take(&mut self.0);
        for path in paths {
            if self.0.iter().any(|(seen, _)| *seen == path) {
                continue;
            }
            let fingerprint = match old.iter().position(|(seen, _)| *seen == path) {
                Some(index) => old.swap_remove(index).1,
                None => Fingerprint::of(&path),
            };
            self.0.push((path, fingerprint));
        }
    }

    /// Whether any file changed since the last call (or since it was recorded).
    fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.0 {
            let now = Fingerprint::of(path);
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// The files a policy configuration depends on.
pub fn policy_inputs(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config_path.to_path_buf()];
    for policy in &config.policies {
        if let ModuleSource::File(path) = &policy.module {
            paths.push(path.clone());
        }
    }
    paths
}

/// Loads a config's policy set (slow on a compilation-cache miss).
pub fn load_served(engine: &Engine, config: &Config) -> Result<Served, crate::chain::LoadError> {
    Ok(Served {
        policies: PolicySet::load(engine, config)?,
        request_timeout: config.request_timeout,
        max_request_bytes: config.max_request_bytes.0 as usize,
    })
}

/// Polls the config file and the modules it names; reloads the policy set when
/// any of them changes. `versions` are those of [`policy_inputs`] from before
/// `initial` and its modules were read. Runs until the task is dropped.
pub async fn watch_policies(
    engine: Engine,
    state: AppState,
    config_path: PathBuf,
    initial: Config,
    mut versions: FileVersions,
) {
    let mut config = initial;
    let mut ticker = tokio::time::interval(config.reload_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !versions.changed() {
            continue;
        }
        let new_config = match Config::load(&config_path) {
            Ok(new_config) => new_config,
            Err(error) => {
                tracing::error!(%error, "the changed config was not applied; still serving the previous policies");
                state.metrics.record_reload("policies", false);
                continue;
            }
        };
        // The new config may name other module files: watch those from now on,
        // recorded before the load below reads them.
        versions.watch(policy_inputs(&config_path, &new_config));
        if new_config.listen != config.listen || new_config.tls != config.tls {
            tracing::warn!("`listen` and `tls` changes take effect after a restart");
        }
        if new_config.reload_interval != config.reload_interval {
            ticker = tokio::time::interval(new_config.reload_interval);
        }
        let engine = engine.clone();
        let candidate = new_config.clone();
        let loaded = tokio::task::spawn_blocking(move || load_served(&engine, &candidate)).await;
        match loaded {
            Ok(Ok(served)) => {
                let count = served.policies.policies().len();
                state.serve(served);
                state.metrics.record_reload("policies", true);
                tracing::info!(policies = count, config = %config_path.display(), "reloaded policies");
                config = new_config;
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "the changed policies were not applied; still serving the previous ones");
                state.metrics.record_reload("policies", false);
            }
            Err(error) => {
                tracing::error!(%error, "loading the changed policies failed");
                state.metrics.record_reload("policies", false);
            }
        }
    }
}

/// Polls the certificate and key files; swaps in the new certificate when they
/// change and load, and keeps the old one (with an error in the log) otherwise.
/// `versions` are the files' from before `certificate` read them.
pub async fn watch_certificate(
    certificate: Arc<ReloadingCertificate>,
    state: AppState,
    interval: Duration,
    mut versions: FileVersions,
) {
    let files = certificate.files().clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !versions.changed() {
            continue;
        }
        match certificate.reload() {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                state.metrics.record_reload("certificate", true);
            }
            Err(error) => {
                tracing::error!(%error, "the changed certificate was not applied; still serving the previous one");
                state.metrics.record_reload("certificate", false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_noticed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "a").unwrap();
        let mut watched = FileVersions::now([path.clone()]);
        assert!(!watched.changed());
        // Replace the way Kubernetes does: write elsewhere, then rename over.
        let next = dir.path().join("next");
        std::fs::write(&next, "bb").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(watched.changed());
        assert!(!watched.changed());
        std::fs::remove_file(&path).unwrap();
        assert!(watched.changed(), "a deleted file is a change too");
    }

    #[test]
    fn watching_new_paths_keeps_changes_not_yet_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let [config, module, other] = ["config.yaml", "a.wasm", "b.wasm"].map(|name| {
            let path = dir.path().join(name);
            std::fs::write(&path, "1").unwrap();
            path
        });
        let mut versions = FileVersions::now([config.clone(), module.clone()]);
        std::fs::write(&module, "22").unwrap();
        // The config now names `other` instead of `module`, and names `config` twice.
        versions.watch([config.clone(), other.clone(), config.clone()]);
        assert!(!versions.changed(), "`module` is no longer watched");
        std::fs::write(&config, "22").unwrap();
        versions.watch([config.clone(), module.clone()]);
        assert!(
            versions.changed(),
            "the change to `config` made before watch() is still seen"
        );
        assert!(!versions.changed());
        std::fs::write(&other, "22").unwrap();
        assert!(!versions.changed(), "`other` is no longer watched");
    }
}
