//! `emailverify probe`: is the service on this host ready? Both doors must say so: the HTTP
//! port's `/readyz` answers 200 and gRPC health says SERVING for the API. A rolling deploy
//! (ops/deploy) runs it on each host it replaces, with the host's own settings, and goes on
//! to the next host only when it exits 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::startup::SERVICE_NAME;

#[derive(clap::Args)]
pub struct Probe {
    /// The gRPC port to ask (a wildcard address is asked on loopback).
    #[arg(long, env = "EMAILVERIFY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// The HTTP port whose `/readyz` to ask.
    #[arg(long, env = "EMAILVERIFY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// How long each of the two questions may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl Probe {
    /// Ok when both doors are ready; else the first that is not, and why.
    pub async fn run(&self) -> anyhow::Result<()> {
        let http = reachable(self.http_addr);
        let grpc = reachable(self.grpc_addr);
        tokio::time::timeout(self.timeout, readyz(http))
            .await
            .with_context(|| format!("http {http}: no answer within {:?}", self.timeout))??;
        tokio::time::timeout(self.timeout, serving(grpc))
            .await
            .with_context(|| format!("grpc {grpc}: no answer within {:?}", self.timeout))??;
        println!("ready: http {http} /readyz 200, grpc {grpc} {SERVICE_NAME} SERVING");
        Ok(())
    }
}

/// A listener on every address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `GET /readyz` must answer 200. HTTP/1.0 with the connection closed after the answer:
/// only the status line is read.
async fn readyz(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("http {addr}: cannot connect"))?;
    stream
        .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or("none");
    if status != "200" {
        bail!("http {addr}: /readyz answered {status}");
    }
    Ok(())
}

/// gRPC health must say SERVING for the API.
async fn serving(addr: SocketAddr) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("grpc {addr}: cannot connect"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .with_context(|| format!("grpc {addr}: health check failed"))?
        .into_inner();
    if answer.status != ServingStatus::Serving as i32 {
        let status = ServingStatus::try_from(answer.status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN");
        bail!("grpc {addr}: health says {status}");
    }
    Ok(())
}
