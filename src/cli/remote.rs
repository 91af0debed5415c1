//! Local or remote: the one place a `principal`, `cert`, `check` or `audit` command chooses
//! between the configured store and the admin API of a server (`--server`, README
//! "Operating certgate").

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::admin_api::client::{Remote, RemoteSettings};
use crate::store::Admin;

use super::store::{open_existing, open_or_create};
use super::{Failure, config_path};

/// `--server URL --cacert F --client-cert F --client-key F`: run the command through the
/// admin API of that server instead of opening the store.
#[derive(Args, Clone, Debug, Default)]
pub(super) struct RemoteArgs {
    /// Admin API of a running certgate (`listen.admin_api`), e.g. https://certgate.example.com:9443;
    /// the command then needs no --config and no store credentials.
    #[arg(long, global = true, env = "CERTGATE_SERVER", value_name = "URL")]
    server: Option<String>,
    /// With --server: CA bundle (PEM) the server's certificate chains to.
    #[arg(long, global = true, env = "CERTGATE_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// With --server: your operator client certificate (PEM).
    #[arg(long, global = true, env = "CERTGATE_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// With --server: its private key (PEM).
    #[arg(long, global = true, env = "CERTGATE_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
}

impl RemoteArgs {
    /// The connection, when --server is given (with all three files).
    pub(super) async fn connect(&self) -> Result<Option<Remote>, Failure> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let missing: Vec<&str> = [
            ("--cacert", self.cacert.is_none()),
            ("--client-cert", self.client_cert.is_none()),
            ("--client-key", self.client_key.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--server needs {} too",
                missing.join(", ")
            )));
        }
        let settings = RemoteSettings {
            server: server.clone(),
            cacert: self.cacert.clone().unwrap_or_default(),
            client_cert: self.client_cert.clone().unwrap_or_default(),
            client_key: self.client_key.clone().unwrap_or_default(),
        };
        Ok(Some(Remote::connect(&settings).await?))
    }
}

/// Whether a local command may create the store file (`principal create`, `cert register`)
/// or needs an existing one.
#[derive(Clone, Copy)]
pub(super) enum Open {
    Existing,
    OrCreate,
}

/// The store a command reads and writes: the server's through its admin API with
/// --server, else the configured one.
pub(super) async fn store(
    config: &Option<PathBuf>,
    remote: &RemoteArgs,
    open: Open,
) -> Result<Arc<dyn Admin>, Failure> {
    if let Some(remote) = remote.connect().await? {
        return Ok(Arc::new(remote));
    }
    let path = config_path(config)?;
    let (_, store) = match open {
        Open::Existing => open_existing(path).await?,
        Open::OrCreate => open_or_create(path).await?,
    };
    Ok(store)
}
