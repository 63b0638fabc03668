//! The core on a migrated database, for the application and for one-off commands.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::core::Core;
use crate::settings::Config;
use crate::store::Store;

/// The core on a migrated database: for the application, and alone for one-off commands
/// (`outbox retry-dead`). `mail_ready` is what the core notifies after queueing mail.
pub async fn core_for(
    config: &Config,
    clock: Arc<dyn Clock>,
    mail_ready: Arc<Notify>,
) -> anyhow::Result<Core> {
    let store = store_for(config).await?;
    Ok(core_on(store, config, clock, mail_ready))
}

/// The database, connected and migrated.
pub(super) async fn store_for(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect_with_pool(&config.database_url, config.db_pool)
        .await
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: cannot connect: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    Ok(store.with_optimistic(config.optimistic))
}

/// The core over `store`, with the settings' keys and policy.
pub(super) fn core_on(
    store: Store,
    config: &Config,
    clock: Arc<dyn Clock>,
    mail_ready: Arc<Notify>,
) -> Core {
    Core::new(
        store,
        config.keys.clone(),
        clock,
        config.policy.clone(),
        mail_ready,
    )
}
