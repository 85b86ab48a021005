//! `reload` (spec/control-work-config.md §3.6): re-read the configuration and restart the
//! backends; any other change needs a restart and is refused with Go's error codes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use receptor_mesh::Node;

use super::start_backends;
use crate::config::{self, CanonicalItem, Invocation};
use crate::tls::TlsConfigs;

/// A failed reload: Go's message and its code (3: a non-reloadable item changed; 4: the
/// configuration cannot be used). receptorctl turns the code into its exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ERRORCODE {code}")]
pub struct ReloadError {
    /// 3 or 4.
    pub code: u8,
    /// What is wrong.
    pub message: String,
}

impl ReloadError {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Everything `reload` needs, captured at start-up.
#[derive(Debug)]
pub struct Reloader {
    node: Node,
    tls: TlsConfigs,
    args: Vec<String>,
    config_file: Option<PathBuf>,
    /// The non-reloadable items of the configuration file as it was at start-up.
    fixed: BTreeSet<(String, String)>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

fn fixed_items(items: Vec<CanonicalItem>) -> BTreeSet<(String, String)> {
    items
        .into_iter()
        .filter(|i| !i.reloadable)
        .map(|i| (i.entity, i.canonical))
        .collect()
}

fn read_items(path: &PathBuf) -> Result<BTreeSet<(String, String)>, ReloadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReloadError::new(4, format!("cannot read {}: {e}", path.display())))?;
    config::canonical_items(&text, &path.display().to_string())
        .map(fixed_items)
        .map_err(|e| ReloadError::new(4, e.to_string().replace('\n', "; ")))
}

impl Reloader {
    /// Records the start-up state of `config` (its argv and its file's fixed items).
    pub(super) fn new(node: Node, tls: TlsConfigs, config: &config::Config) -> Self {
        let fixed = config
            .config_file
            .as_ref()
            .and_then(|path| read_items(path).ok())
            .unwrap_or_default();
        Self {
            node,
            tls,
            args: config.args.clone(),
            config_file: config.config_file.clone(),
            fixed,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Re-reads the configuration, then stops every backend and starts them again from it.
    ///
    /// # Errors
    /// No configuration file, an invalid configuration (code 4), or a changed item that only a
    /// restart can apply (code 3). Nothing is stopped unless the new configuration is usable.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let Some(path) = &self.config_file else {
            return Err(ReloadError::new(
                4,
                "no configuration file was provided, reload function not set",
            ));
        };
        let config = match config::from_args(self.args.clone()) {
            Ok(Invocation::Run(config)) => config,
            Ok(Invocation::Print(_)) => {
                return Err(ReloadError::new(
                    4,
                    "the command line no longer starts a node",
                ));
            }
            Err(error) => return Err(ReloadError::new(4, error.to_string().replace('\n', "; "))),
        };
        let now = read_items(path)?;
        if let Some((entity, _)) = now.difference(&self.fixed).next() {
            return Err(ReloadError::new(
                3,
                format!(
                    "a non-reloadable config action '{entity}' was modified or added. Must restart receptor for these changes to take effect"
                ),
            ));
        }
        if let Some((entity, _)) = self.fixed.difference(&now).next() {
            return Err(ReloadError::new(
                3,
                format!(
                    "a non-reloadable config action '{entity}' was removed. Must restart receptor for changes to take effect"
                ),
            ));
        }
        tracing::info!("reloading: restarting backends");
        self.node.stop_backends();
        start_backends(&self.node, &config, &self.tls)
            .await
            .map_err(|error| ReloadError::new(4, crate::error_chain(&error)))?;
        Ok(())
    }
}
