//! `Application`: binds the three ports (gRPC, HTTP, admin; port 0 is fine: tests use it),
//! runs migrations, builds the core, and runs the gRPC server, the HTTP shim, the admin
//! endpoint, the mail worker and the health watcher until asked to stop. `main` and the
//! tests start the service the same way.
//!
//! Every port accepts through [`listen::accept`]: at most so many connections open at once
//! (past it, new ones wait in the kernel's queue), a peer address past its own bound is
//! refused at once (gRPC: open connections; HTTP: connections not yet answered), idle
//! kept-alive HTTP connections close when that port nears its cap, and a failing accept —
//! a full file-descriptor table above all — is logged at WARN and backed off from instead
//! of spinning. What one connection may take is each protocol's: `http::serve` (header
//! deadline) and `grpc::conn` (first-frame and idle deadlines).

mod assemble;
mod listen;

pub use assemble::core_for;
use assemble::{core_on, store_for};

pub(crate) use listen::Slot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::clock::Clock;
use crate::core::Core;
use crate::grpc::conn::{Deadlines, EdgeLayer, Guarded};
use crate::grpc::pb::{self, EmailVerificationServer};
use crate::grpc::{BearerAuth, service::GrpcService};
use crate::http::{self, HttpState, pages::Pages};
use crate::inbound::Inbound;
use crate::mail::message::Composer;
use crate::mail::outbox::{ROUNDS_IN_FLIGHT, Worker};
use crate::settings::Config;
use crate::store::Store;

/// The API's name in gRPC health (what orchestrators' probes and `emailverify probe` ask).
pub const SERVICE_NAME: &str = "emailverify.v1.EmailVerification";
/// The largest request we accept: every field of our messages is small.
const MAX_GRPC_MESSAGE: usize = 16 * 1024;
/// The admin port serves a scraper and a probe or two.
const ADMIN_MAX_CONNECTIONS: usize = 32;
/// How often the gRPC server pings a connection, and how long it waits for the answer,
/// so that a peer that vanished (and its open streams) is noticed.
const GRPC_PING_INTERVAL: Duration = Duration::from_secs(30);
const GRPC_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The three ports, bound: by [`Application::build`] from the settings, or by a test on
/// port 0 (to know the link base URL before the application exists).
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses; an address in use names its setting.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, setting: &'static str| async move {
            listen::bind(addr).map_err(|e| anyhow::anyhow!("{setting} {addr}: {e}"))
        };
        Ok(Self {
            grpc: bind(config.grpc_addr, "EMAILVERIFY_GRPC_ADDR").await?,
            http: bind(config.http_addr, "EMAILVERIFY_HTTP_ADDR").await?,
            admin: bind(config.admin_addr, "EMAILVERIFY_ADMIN_ADDR").await?,
        })
    }
}

pub struct Application {
    listeners: Listeners,
    /// The inbound SMTP listener for bounces and complaints, when configured.
    inbound: Option<(TcpListener, Arc<Inbound>)>,
    core: Arc<Core>,
    store: Store,
    worker: Worker,
    config: Config,
    stop: CancellationToken,
}

impl Application {
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config).await?;
        Self::build_on(config, clock, listeners).await
    }

    /// Builds on listeners the caller bound (tests bind port 0 first, to know the link
    /// base URL before the application exists).
    pub async fn build_on(
        config: Config,
        clock: Arc<dyn Clock>,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        let wake = Arc::new(Notify::new());
        let store = store_for(&config).await?;
        let core = Arc::new(core_on(store.clone(), &config, clock.clone(), wake.clone()));
        config
            .transport
            .prepare()
            .await
            .map_err(|e| anyhow::anyhow!("EMAILVERIFY_MAIL_URL: {e}"))?;
        // The worker's claims and marks never wait behind requests for a connection.
        let worker_store = store
            .dedicated(&config.database_url, ROUNDS_IN_FLIGHT as u32)
            .await
            .map_err(|e| anyhow::anyhow!("DATABASE_URL: cannot connect: {e}"))?;
        let worker = Worker {
            id: uuid::Uuid::now_v7().to_string(),
            store: worker_store,
            composer: Composer::new(
                config.keys.clone(),
                config.mail_from.clone(),
                config.bounces.bounce_address.clone(),
                config.relay.dkim.as_ref(),
                config.time_zone.clone(),
            )
            .map_err(|e| anyhow::anyhow!("EMAILVERIFY_DKIM_KEY: {e}"))?
            .with_default_locale(config.default_locale),
            transport: config.transport.clone(),
            clock,
            wake,
            retry: config.retry.clone(),
            suppression_ttl: config.bounces.suppression_ttl,
        };
        let inbound = match (config.bounces.inbound_addr, &config.bounces.bounce_address) {
            (Some(addr), Some(bounce)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("EMAILVERIFY_INBOUND_ADDR {addr}: {e}"))?;
                let inbound = Inbound::new(
                    store.clone(),
                    worker.clock.clone(),
                    config.keys.clone(),
                    bounce.clone(),
                    &config.bounces,
                );
                Some((listener, Arc::new(inbound)))
            }
            _ => None,
        };
        Ok(Self {
            listeners,
            inbound,
            core,
            store,
            worker,
            config,
            stop: CancellationToken::new(),
        })
    }

    /// Cancel this to stop the application gracefully.
    pub fn stop_handle(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Where the bounce listener is bound, if it is on (port 0 in settings: a free one).
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listeners: Listeners { grpc, http, admin },
            inbound,
            core,
            store,
            worker,
            config,
            stop,
        } = self;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let metrics = crate::metrics::handle();
        crate::metrics::init();
        let limits = config.connections.clone();

        let (reporter, health) = tonic_health::server::health_reporter();
        // Known before the first request: both names answer from the start.
        let first = if core.ready().await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(SERVICE_NAME, first).await;
        reporter.set_service_status("", first).await;
        // Reflection v1 (the contract), and v1alpha for the many tools that still ask it.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let api = EmailVerificationServer::new(GrpcService::new(
            core.clone(),
            stop.clone(),
            &config.feed,
        ))
        .max_decoding_message_size(MAX_GRPC_MESSAGE);
        let api = tonic::service::interceptor::InterceptedService::new(
            api,
            BearerAuth::new(config.api_tokens.clone()),
        );

        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            let mut tls_config = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(
                    &tls.cert_pem,
                    &tls.key_pem,
                ))
                // A client that starts a handshake must finish it as quickly as it must
                // send its first frame.
                .timeout(limits.header_timeout);
            if let Some(ca) = &tls.client_ca_pem {
                // Mutual TLS: a client without a certificate from this CA is refused
                // during the handshake, before any RPC.
                tls_config = tls_config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder
                .tls_config(tls_config)
                .map_err(|e| anyhow::anyhow!("EMAILVERIFY_TLS_CERT/KEY: {e}"))?;
        }
        let deadlines = Deadlines {
            first_frame: limits.header_timeout,
            idle: limits.idle_timeout,
        };
        let grpc_policy = listen::Policy {
            max: limits.max_connections,
            per_peer: listen::PerPeer::Open(limits.max_per_peer),
            evict_idle: false,
        };
        let grpc_connections =
            listen::accept(grpc, grpc_policy, "grpc").map(move |(stream, _, slot)| {
                // Small unary calls: never wait for a full segment.
                let _ = stream.set_nodelay(true);
                Ok::<_, std::io::Error>(Guarded::new(stream, slot, deadlines))
            });
        let grpc_server = builder
            .timeout(Duration::from_secs(30))
            .max_concurrent_streams(limits.grpc_max_streams)
            .http2_keepalive_interval(Some(GRPC_PING_INTERVAL))
            .http2_keepalive_timeout(Some(GRPC_PING_TIMEOUT))
            .http2_max_header_list_size(16 * 1024)
            .layer(EdgeLayer)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .serve_with_incoming_shutdown(grpc_connections, stop.clone().cancelled_owned());

        let state = Arc::new(HttpState {
            core: core.clone(),
            pages: Pages::new(config.time_zone.clone())
                .with_support(&config.policy.support_contact),
            success_url: config.success_url.clone(),
            public_origin: url::Url::parse(&config.policy.public_url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
            trusted_proxies: config.trusted_proxies,
            metrics,
        });
        let http_policy = listen::Policy {
            max: limits.max_connections,
            // Behind trusted proxies every peer is a proxy, speaking for many people.
            per_peer: match config.trusted_proxies {
                0 => listen::PerPeer::Unanswered(limits.http_pending_per_peer),
                _ => listen::PerPeer::Unbounded,
            },
            evict_idle: true,
        };
        let http_server = http::serve(
            listen::accept(http, http_policy, "http"),
            http::router(state.clone()),
            "http",
            limits.header_timeout,
            stop.clone(),
        );
        let admin_server = http::serve(
            listen::accept(
                admin,
                listen::Policy::capped(ADMIN_MAX_CONNECTIONS),
                "admin",
            ),
            http::admin_router(
                state,
                http::support::Console::new(
                    core.clone(),
                    config.support.clone(),
                    config.time_zone.clone(),
                    &config.policy.public_url,
                ),
            ),
            "admin",
            limits.header_timeout,
            stop.clone(),
        );

        // Health: SERVING only while the database answers and takes writes (migrations
        // already ran); asked every second, so that a failover shows within seconds.
        let health_task = {
            let core = core.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let ready = core.ready().await;
                    crate::metrics::ready(ready);
                    let status = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    reporter.set_service_status(SERVICE_NAME, status).await;
                    reporter.set_service_status("", status).await;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                for name in [SERVICE_NAME, ""] {
                    reporter
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
            }
        };

        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            admin = %admin_addr,
            mail = %config.transport.describe(),
            "emailverify is serving"
        );
        tokio::spawn(crate::metrics::upkeep(stop.clone()));
        crate::publish::start(&config, core.clone(), &store, stop.clone()).await?;
        let keep = config.retention.clone();
        let retention =
            crate::retention::Retention::from((store.clone(), worker.clock.clone(), keep));
        tokio::spawn(retention.run(stop.clone()));
        if let Some((listener, inbound)) = inbound {
            tracing::info!(inbound = %listener.local_addr()?, "listening for bounces and complaints");
            tokio::spawn(crate::inbound::smtp::serve(listener, inbound, stop.clone()));
        }
        let worker_id = worker.id.clone();
        let mut worker_task = tokio::spawn(worker.run(stop.clone()));
        // Once asked to stop, everything drains within the shutdown deadline: open
        // requests finish, the worker finishes its sends in flight and hands back the
        // mails it claimed. Whatever is still running then is cut off.
        let drained = async {
            let servers = tokio::join!(grpc_server, http_server, admin_server, health_task);
            stop.cancel();
            let _ = (&mut worker_task).await;
            servers
        };
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(config.shutdown_timeout).await;
        };
        let drained = tokio::select! {
            servers = drained => Some(servers),
            () = deadline => None,
        };
        let Some((grpc_result, (), (), ())) = drained else {
            tracing::warn!(
                deadline = ?config.shutdown_timeout,
                "shutdown deadline passed: cutting off what is still running"
            );
            worker_task.abort();
            let _ = worker_task.await;
            // A send cut off may have reached the SMTP server: at-least-once, as after a
            // crash. Its claim goes back now rather than at the end of its lease.
            if let Err(e) = store.release_claims_of(&worker_id).await {
                tracing::warn!(error = %e, "could not hand back mail claims; their lease will expire");
            }
            return Ok(());
        };
        grpc_result?;
        tracing::info!("emailverify stopped");
        Ok(())
    }
}
