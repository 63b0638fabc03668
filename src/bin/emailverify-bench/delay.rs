//! `--db-delay`: the database as if it were across a network. A TCP relay in front of
//! PostgreSQL that holds every chunk of the server's answers for the given time before it
//! passes it on (each chunk timed from its own arrival, so a long answer is not delayed
//! twice), and passes the client's bytes at once: every round trip to the database takes
//! that much longer, as it does when the database is in another zone. Loopback only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the relay to `url`'s host and port; the same URL, through the relay.
pub async fn delayed_database(url: &str, delay: Duration) -> anyhow::Result<String> {
    let mut through = url::Url::parse(url)?;
    let host = through.host_str().unwrap_or("127.0.0.1").to_owned();
    let target = format!("{host}:{}", through.port().unwrap_or(5432));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(&target).await {
                    relay(client, server, delay).await;
                }
            });
        }
    });
    through
        .set_host(Some("127.0.0.1"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    through
        .set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("no port"))?;
    Ok(through.to_string())
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    client.set_nodelay(true).ok();
    server.set_nodelay(true).ok();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
    let (chunks, mut due) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read_answers = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0
                || chunks
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let pass_answers = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if client_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = async { tokio::join!(read_answers, pass_answers) } => {}
    }
}
