//! Timing mode (`--timing N`): do refusals tell a known user from an unknown one by how
//! long they take? A known user with nothing pending and unknown user ids each get N
//! Resend, N CancelChange and N ConfirmCode calls, interleaved one by one (so both see the
//! same machine noise); all answer NO_PENDING_FLOW. Reports both latency distributions.

use std::time::{Duration, Instant};

use emailverify::grpc::pb::{self, EmailVerificationClient};
use tonic::transport::Channel;

use super::pct;

pub async fn run(
    n: usize,
    mut client: EmailVerificationClient<Channel>,
    known: String,
    run: &str,
) -> anyhow::Result<()> {
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..n {
        for (who, user) in [(0, known.clone()), (1, format!("nobody-{run}-{i}"))] {
            for call in 0..3 {
                let started = Instant::now();
                let result = match call {
                    0 => client
                        .resend(pb::ResendRequest {
                            user_id: user.clone(),
                        })
                        .await
                        .map(|_| ()),
                    1 => client
                        .cancel_change(pb::CancelChangeRequest {
                            user_id: user.clone(),
                        })
                        .await
                        .map(|_| ()),
                    _ => client
                        .confirm_code(pb::ConfirmCodeRequest {
                            user_id: user.clone(),
                            code: "000000".into(),
                        })
                        .await
                        .map(|_| ()),
                };
                let elapsed = started.elapsed();
                let status = result.expect_err("nothing is pending");
                anyhow::ensure!(
                    status.code() == tonic::Code::FailedPrecondition,
                    "expected NO_PENDING_FLOW, got {status:?}"
                );
                times[who].push(elapsed);
            }
        }
    }
    let [mut known_t, mut unknown_t] = times;
    println!("| NO_PENDING_FLOW answered to | calls | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, t) in [
        ("a known user", &mut known_t),
        ("an unknown user", &mut unknown_t),
    ] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} |",
            t.len(),
            pct(t, 0.50),
            pct(t, 0.90),
            pct(t, 0.99)
        );
    }
    println!(
        "known / unknown p50: {:.2}",
        pct(&mut known_t, 0.5) / pct(&mut unknown_t, 0.5).max(f64::MIN_POSITIVE)
    );
    Ok(())
}
