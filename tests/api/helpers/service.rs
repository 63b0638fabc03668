//! `Service`: a running service as a test sees it — its gRPC calls, its pages and its
//! database — whether it runs in this process (`TestApp`) or as the binary (`Served`).

use std::time::Duration;

use emailverify::grpc::pb::{self, EmailVerificationClient};
use sea_orm::{Database, DatabaseConnection};
use tonic::transport::Channel;

use super::{ReceivedMail, count, poll_until};

/// A running service as a test sees it, wherever it runs (in this process or as the
/// binary): its gRPC API, its pages and its database.
pub struct Service {
    pub grpc: EmailVerificationClient<Channel>,
    pub grpc_addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    /// The public URL: the HTTP port, where the mails' links point.
    pub http_base: String,
    /// The admin port (`/metrics`, `/healthz`, `/readyz`), as `http://host:port`.
    pub admin_base: String,
    pub db: DatabaseConnection,
    pub db_url: String,
    /// The database's name on the PostgreSQL server (empty for SQLite).
    pub db_name: String,
}

impl Service {
    /// Reaches a service; the gRPC channel connects lazily (an app serving TLS is reached
    /// through the test's own TLS channel instead).
    pub async fn connect(
        grpc_addr: std::net::SocketAddr,
        http_base: String,
        db_url: String,
    ) -> Self {
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_lazy();
        Self {
            grpc: EmailVerificationClient::new(channel),
            grpc_addr,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            http_base,
            admin_base: String::new(),
            db: Database::connect(&db_url).await.unwrap(),
            db_name: url::Url::parse(&db_url)
                .ok()
                .filter(|u| u.scheme().starts_with("postgres"))
                .map(|u| u.path().trim_start_matches('/').to_string())
                .unwrap_or_default(),
            db_url,
        }
    }

    /// The same service, whose admin port is `admin`.
    pub fn with_admin(mut self, admin: std::net::SocketAddr) -> Self {
        self.admin_base = format!("http://{admin}");
        self
    }

    /// A fresh channel to the gRPC port (for the health and reflection clients).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The confirmation link of a mail; it must point at this service's HTTP port.
    pub fn link_in(&self, mail: &ReceivedMail) -> String {
        mail.link(&self.http_base)
    }

    /// The token of a mail's link (which must point at this service).
    pub fn token_in(&self, mail: &ReceivedMail) -> String {
        mail.token(&self.http_base)
    }

    pub async fn confirm_code(
        &self,
        user: &str,
        code: &str,
    ) -> Result<pb::ConfirmLinkResponse, tonic::Status> {
        self.grpc
            .clone()
            .confirm_code(pb::ConfirmCodeRequest {
                user_id: user.into(),
                code: code.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn events(
        &self,
        user: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListEventsResponse, tonic::Status> {
        self.grpc
            .clone()
            .list_events(pb::ListEventsRequest {
                user_id: user.into(),
                page_size,
                page_token: page_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn request_verification(
        &self,
        user: &str,
        email: &str,
    ) -> Result<pb::Flow, tonic::Status> {
        self.request_verification_in(user, email, "").await
    }

    /// RequestVerification with a locale tag.
    pub async fn request_verification_in(
        &self,
        user: &str,
        email: &str,
        locale: &str,
    ) -> Result<pb::Flow, tonic::Status> {
        self.grpc
            .clone()
            .request_verification(pb::RequestVerificationRequest {
                user_id: user.into(),
                email: email.into(),
                locale: locale.into(),
            })
            .await
            .map(|r| r.into_inner().flow.expect("a flow"))
    }

    pub async fn request_change(&self, user: &str, email: &str) -> Result<pb::Flow, tonic::Status> {
        self.request_change_in(user, email, "").await
    }

    /// RequestChange with a locale tag.
    pub async fn request_change_in(
        &self,
        user: &str,
        email: &str,
        locale: &str,
    ) -> Result<pb::Flow, tonic::Status> {
        self.grpc
            .clone()
            .request_change(pb::RequestChangeRequest {
                user_id: user.into(),
                new_email: email.into(),
                locale: locale.into(),
            })
            .await
            .map(|r| r.into_inner().flow.expect("a flow"))
    }

    pub async fn confirm(&self, token: &str) -> Result<pb::ConfirmLinkResponse, tonic::Status> {
        self.grpc
            .clone()
            .confirm_link(pb::ConfirmLinkRequest {
                token: token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn resend(&self, user: &str) -> Result<pb::Flow, tonic::Status> {
        self.grpc
            .clone()
            .resend(pb::ResendRequest {
                user_id: user.into(),
            })
            .await
            .map(|r| r.into_inner().flow.expect("a flow"))
    }

    pub async fn status(&self, user: &str) -> Result<pb::GetStatusResponse, tonic::Status> {
        self.grpc
            .clone()
            .get_status(pb::GetStatusRequest {
                user_id: user.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn cancel(&self, user: &str) -> Result<(), tonic::Status> {
        self.grpc
            .clone()
            .cancel_change(pb::CancelChangeRequest {
                user_id: user.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.http_base))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_form(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.http_base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// GET on the admin port.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        assert!(
            !self.admin_base.is_empty(),
            "this service's admin port is unknown"
        );
        self.http
            .get(format!("{}{path}", self.admin_base))
            .send()
            .await
            .unwrap()
    }

    /// The `/metrics` page of the admin port, as Prometheus scrapes it.
    pub async fn metrics(&self) -> String {
        let resp = self.admin_get("/metrics").await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        resp.text().await.unwrap()
    }

    /// Number of rows in a table, with an optional `WHERE` (to prove that a refused request
    /// wrote nothing, or what the worker recorded).
    pub async fn count(&self, table_where: &str) -> i64 {
        count(&self.db, table_where).await
    }

    /// Waits (bounded) until `count(table_where)` is `n`, for what the mail worker records
    /// right after a delivery.
    pub async fn eventually_count(&self, table_where: &str, n: i64) {
        // Generous: writes after the answer (refusals, marks) queue behind the whole
        // suite's load on two cores; a count that is reached returns at once.
        let reached = poll_until(Duration::from_secs(20), async || {
            (self.count(table_where).await == n).then_some(())
        })
        .await;
        if reached.is_none() {
            assert_eq!(self.count(table_where).await, n, "{table_where}");
        }
    }

    /// Every table's rows rendered as text, to search for secrets.
    pub async fn dump_database(&self) -> String {
        use emailverify::store::entity::{event, flow, outbox, token, user};
        use sea_orm::EntityTrait;
        format!(
            "{:?}{:?}{:?}{:?}{:?}",
            user::Entity::find().all(&self.db).await.unwrap(),
            flow::Entity::find().all(&self.db).await.unwrap(),
            token::Entity::find().all(&self.db).await.unwrap(),
            outbox::Entity::find().all(&self.db).await.unwrap(),
            event::Entity::find().all(&self.db).await.unwrap(),
        )
    }
}
