//! Logs: tracing-subscriber, `pretty` for people and `json` for collectors. The service
//! logs masked addresses only and never tokens, codes, keys or mail bodies; the default
//! filter keeps dependencies' chatty debug output (which might carry SQL values) out.

use tracing_subscriber::EnvFilter;

pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,h2=warn,hyper=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
