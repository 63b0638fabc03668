//! The bench's SMTP sink: a minimal SMTP server on loopback that records each message's
//! recipient, link token and arrival time. Like the relays the service meets in production
//! (Postfix, Amazon SES), it offers PIPELINING (RFC 2920) and answers a pipelined group of
//! commands in one write, flushed once it has read all the client sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the SMTP sink saw: the link token per recipient and when it arrived.
#[derive(Default)]
pub struct Inbox {
    pub by_recipient: HashMap<String, (String, Instant)>,
}

/// A minimal SMTP server that records each message's recipient, link token and arrival.
pub async fn start_sink(inbox: Arc<Mutex<Inbox>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                let mut write = tokio::io::BufWriter::new(write);
                let mut lines = BufReader::new(read);
                let mut line = String::new();
                let mut rcpt = String::new();
                let _ = write.write_all(b"220 bench\r\n").await;
                loop {
                    // Replies wait until the client's pipelined commands are all read.
                    if lines.buffer().is_empty() && write.flush().await.is_err() {
                        return;
                    }
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let upper = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        rcpt = line.trim_end()[8..]
                            .trim()
                            .trim_matches(['<', '>'])
                            .to_string();
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        if write.write_all(b"354 go\r\n").await.is_err()
                            || write.flush().await.is_err()
                        {
                            return;
                        }
                        let mut token = String::new();
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            if token.is_empty()
                                && let Some(rest) = line.split("token=").nth(1)
                            {
                                token = rest.chars().take(43).collect();
                            }
                        }
                        inbox
                            .lock()
                            .unwrap()
                            .by_recipient
                            .insert(rcpt.clone(), (token, Instant::now()));
                        b"250 OK\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        let _ = write.flush().await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}
