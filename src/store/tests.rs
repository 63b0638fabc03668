//! The store's trickiest statements, on a real SQLite database in a temp folder (they run
//! in milliseconds; the integration suite runs them on PostgreSQL too, through the service).

use std::time::Duration;

use super::entity::flow;
use super::{NewMail, Store, SuppressionCause};
use crate::domain::{
    EmailAddress, FlowKind, FlowState, FlowStep, Locale, MailId, MailboxKey, Rate, Template, UserId,
};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// An address as the store gets it (stored as given: normalising is the edge's job).
fn address(raw: &str) -> EmailAddress {
    EmailAddress::from_trusted(raw.to_owned())
}

fn pending_flow(user: &str, email: &str) -> flow::Model {
    flow::Model {
        flow_id: format!("flow-{user}"),
        user_id: user.into(),
        kind: FlowKind::Verify,
        step: FlowStep::ConfirmNew,
        state: FlowState::Pending,
        new_email: email.into(),
        old_email: None,
        locale: "en".into(),
        expires_at: 10,
        resend_available_at: 0,
        created_at: 0,
        updated_at: 0,
        failed_codes: 0,
        locked_until: None,
    }
}

#[tokio::test]
async fn the_rate_limit_step_allows_the_burst_then_says_how_long_to_wait() {
    let (store, _dir) = store().await;
    let rate = Rate {
        count: 2,
        period: Duration::from_secs(60),
    };
    let now = 1_000_000;
    assert_eq!(store.take("b", rate, now).await.unwrap(), Ok(()));
    assert_eq!(store.take("b", rate, now).await.unwrap(), Ok(()));
    let wait = store.take("b", rate, now).await.unwrap().unwrap_err();
    assert_eq!(
        wait,
        Duration::from_secs(30),
        "one event's emission interval"
    );
    // A refusal takes nothing: peeking agrees, and after the wait one more fits.
    assert!(store.peek("b", rate, now).await.unwrap().is_err());
    assert_eq!(store.take("b", rate, now + 30_000).await.unwrap(), Ok(()));
    // Buckets are independent.
    assert_eq!(store.take("other", rate, now).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn a_claimed_mail_is_nobody_elses_until_its_lease_ends_or_it_is_released() {
    let (store, _dir) = store().await;
    let tx = store.begin().await.unwrap();
    tx.create_or_lock_user(&user("u"), 0).await.unwrap();
    for i in 0..3 {
        tx.enqueue_mail(NewMail {
            mail_id: MailId::from_trusted(format!("m{i}")),
            user_id: &user("u"),
            flow_id: None,
            template: Template::ChangeNotice,
            recipient: &address("j@example.com"),
            locale: Some(Locale::En),
            params: "{}".into(),
            sealed_link: None,
            now: i,
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let lease = Duration::from_secs(60);
    let a = store.claim_due_mail("a", 100, lease, 2).await.unwrap();
    assert_eq!(
        a.iter().map(|m| m.mail_id.as_str()).collect::<Vec<_>>(),
        ["m0", "m1"],
        "oldest due first, at most the limit"
    );
    let b = store.claim_due_mail("b", 100, lease, 10).await.unwrap();
    assert_eq!(b.len(), 1, "only the unclaimed one");
    assert_eq!(b[0].mail_id, "m2");
    assert!(
        store
            .claim_due_mail("c", 100, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Released: free at once. Lease over: free too. Renewal only while still ours.
    store.release_claims(&["m0".into()]).await.unwrap();
    let c = store.claim_due_mail("c", 101, lease, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].mail_id, "m0");
    assert!(c[0].claimed_by.as_deref() == Some("c"));
    let after_lease = 101 + 60_001;
    assert!(
        !store
            .renew_claim("m1", "a", after_lease, lease)
            .await
            .unwrap()
    );
    let d = store
        .claim_due_mail("d", after_lease, lease, 10)
        .await
        .unwrap();
    assert_eq!(d.len(), 3, "every lease has run out");
}

#[tokio::test]
async fn the_request_read_finds_the_verified_owner_the_pending_flow_and_a_suppression() {
    let (store, _dir) = store().await;
    let tx = store.begin().await.unwrap();
    tx.create_or_lock_user(&user("owner"), 0).await.unwrap();
    tx.set_verified_email(&user("owner"), &address("jane@example.com"), 0)
        .await
        .unwrap();
    tx.create_or_lock_user(&user("u"), 0).await.unwrap();
    tx.insert_flow(pending_flow("u", "jane@example.com"))
        .await
        .unwrap();
    let read = tx
        .request_read(&user("u"), &address("jane@example.com"), None, 0)
        .await
        .unwrap();
    assert_eq!(read.verified_owner, Some(user("owner")));
    assert_eq!(read.pending, Some(pending_flow("u", "jane@example.com")));
    assert!(read.suppression.is_none());
    // Nobody has it verified, and "owner" has nothing pending.
    let read = tx
        .request_read(&user("owner"), &address("free@example.com"), None, 0)
        .await
        .unwrap();
    assert_eq!((read.verified_owner, read.pending), (None, None));
    // Unverified claims block nobody; a second verified claim trips the index.
    tx.set_unverified_email(&user("u"), &address("jane@example.com"), 0)
        .await
        .unwrap();
    assert!(matches!(
        tx.set_verified_email(&user("u"), &address("jane@example.com"), 0)
            .await,
        Err(crate::error::CoreError::EmailTaken)
    ));
    // A suppression of either inbox a request would mail is read in the same statement;
    // an expired one is not in force.
    tx.commit().await.unwrap();
    store
        .suppress(
            &MailboxKey::of("jane@example.com"),
            SuppressionCause::Bounced,
            Some(100),
            "5.1.1",
            0,
        )
        .await
        .unwrap();
    let tx = store.begin().await.unwrap();
    let read = |also: Option<&'static str>, now: i64| {
        let tx = &tx;
        async move {
            let also = also.map(address);
            tx.request_read(
                &user("owner"),
                &address("free@example.com"),
                also.as_ref(),
                now,
            )
            .await
            .unwrap()
            .suppression
        }
    };
    let s = read(Some("Jane@example.com"), 50).await.expect("in force");
    assert_eq!((s.cause, s.until), (SuppressionCause::Bounced, Some(100)));
    assert!(read(Some("jane@example.com"), 100).await.is_none(), "ended");
    assert!(read(None, 50).await.is_none(), "another inbox");
}
