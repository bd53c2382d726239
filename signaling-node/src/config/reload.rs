//! The live settings: [`ConfigHandle`] resolves the layers (file, remote, flags), publishes
//! the result on a watch channel, and reloads when the settings or secret file changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{ConfigError, Settings, SettingsPatch, SettingsWatch, Tunables};
use crate::metrics::Metrics;

/// Fingerprint of a file for change detection.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

struct Layers {
    file: Option<PathBuf>,
    remote: Option<SettingsPatch>,
    args: SettingsPatch,
    /// Settings given whole ([`ConfigHandle::fixed`]): the remote layer's tunables go on top.
    fixed: Option<Settings>,
    /// The settings file's stamp, then the key files' ([`super::key_files`]).
    stamps: Vec<Stamp>,
}

impl Layers {
    fn read_file(&self) -> Result<SettingsPatch, ConfigError> {
        match &self.file {
            None => Ok(SettingsPatch::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                SettingsPatch::from_toml(&text)
            }
        }
    }

    fn resolve(&self) -> Result<Settings, ConfigError> {
        if let Some(fixed) = &self.fixed {
            let mut s = fixed.clone();
            if let Some(remote) = &self.remote {
                s.tunables.apply(remote);
            }
            s.validate()?;
            return Ok(s);
        }
        let mut patch = self.read_file()?;
        if let Some(remote) = &self.remote {
            patch.merge(remote);
        }
        patch.merge(&self.args);
        Settings::resolve(&patch)
    }

    /// Stamps of the settings file and of the key files `current` was read from.
    fn stamps(&self, current: &Settings) -> Vec<Stamp> {
        let keys = super::key_files(
            current.jwt_secret_file.as_ref(),
            current.jwt_keys_dir.as_ref(),
        );
        std::iter::once(self.file.as_deref().and_then(stamp))
            .chain(keys.iter().map(|p| stamp(p)))
            .collect()
    }
}

/// Owner of the live settings: loads them, reloads them on file change, and publishes them on
/// a watch channel. Cheap to clone; every method is synchronous and short.
#[derive(Clone)]
pub struct ConfigHandle {
    layers: Arc<Mutex<Layers>>,
    tx: Arc<watch::Sender<Arc<Settings>>>,
}

impl fmt::Debug for ConfigHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigHandle").finish_non_exhaustive()
    }
}

impl ConfigHandle {
    /// Loads settings from `file` (if any) overlaid with `args` (flags and env vars).
    pub fn load(args: SettingsPatch, file: Option<PathBuf>) -> Result<Self, ConfigError> {
        let mut layers = Layers {
            file,
            remote: None,
            args,
            fixed: None,
            stamps: Vec::new(),
        };
        let settings = layers.resolve()?;
        layers.stamps = layers.stamps(&settings);
        let (tx, _) = watch::channel(Arc::new(settings));
        Ok(Self {
            layers: Arc::new(Mutex::new(layers)),
            tx: Arc::new(tx),
        })
    }

    /// A handle publishing `settings` as given (no file; tests and embedders); the remote
    /// layer still applies on top.
    pub fn fixed(settings: Settings) -> Self {
        let (tx, _) = watch::channel(Arc::new(settings.clone()));
        Self {
            layers: Arc::new(Mutex::new(Layers {
                file: None,
                remote: None,
                args: SettingsPatch::default(),
                fixed: Some(settings),
                stamps: Vec::new(),
            })),
            tx: Arc::new(tx),
        }
    }

    /// The current settings.
    pub fn current(&self) -> Arc<Settings> {
        self.tx.borrow().clone()
    }

    /// A receiver of the live settings.
    pub fn subscribe(&self) -> SettingsWatch {
        self.tx.subscribe()
    }

    /// Replaces the tunables directly (embedders and tests; the file layer is untouched).
    pub fn set_tunables(&self, tunables: Tunables) {
        if let Some(fixed) = &mut self.lock().fixed {
            fixed.tunables = tunables.clone();
        }
        self.tx
            .send_modify(|s| Arc::make_mut(s).tunables = tunables);
    }

    /// Sets (or clears) the remote layer (the cluster's config from etcd) and re-resolves.
    pub fn set_remote(&self, remote: Option<SettingsPatch>) -> Result<(), ConfigError> {
        let mut layers = self.lock();
        let previous = layers.remote.replace(remote.unwrap_or_default());
        match self.apply(&layers) {
            Ok(()) => Ok(()),
            Err(e) => {
                layers.remote = previous;
                Err(e)
            }
        }
    }

    /// Re-reads the file and secret and publishes the result when valid.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let layers = self.lock();
        self.apply(&layers)
    }

    /// Reloads if the settings file or the secret file changed since the last look; returns
    /// whether anything was reloaded. Errors keep the last good settings.
    pub fn reload_if_changed(&self) -> Result<bool, ConfigError> {
        let mut layers = self.lock();
        let now = layers.stamps(&self.current());
        if now == layers.stamps {
            return Ok(false);
        }
        // Remember the new stamps even on error, so a broken file is reported once, not
        // every second; the next edit triggers another attempt.
        layers.stamps = now;
        self.apply(&layers)?;
        Ok(true)
    }

    fn apply(&self, layers: &Layers) -> Result<(), ConfigError> {
        let next = layers.resolve()?;
        let current = self.current();
        let (merged, ignored) = current.reloaded(&next);
        if !ignored.is_empty() {
            tracing::warn!(
                ?ignored,
                "changed settings need a restart; keeping startup values"
            );
        }
        if merged != *current {
            tracing::info!(tunables = ?merged.tunables, "settings reloaded");
            self.tx.send_replace(Arc::new(merged));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls the files every `every` until `shutdown` resolves, reloading on change; errors
    /// are logged and counted in `metrics`.
    pub async fn watch_files(
        self,
        every: Duration,
        metrics: Metrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            // File I/O is tiny; keep it off the async workers anyway.
            let handle = self.clone();
            let result = tokio::task::spawn_blocking(move || handle.reload_if_changed()).await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    metrics.config_reload_errors.inc();
                    tracing::error!(error = %e, "settings reload failed; keeping the last good settings");
                }
                Err(e) => tracing::error!(error = %e, "settings reload task failed"),
            }
        }
    }
}
