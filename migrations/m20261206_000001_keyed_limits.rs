//! Rate-limit buckets keyed by keyed digests (API.md, release 3, "Limits outlive
//! erasure"). Until now a bucket was `user:`, `rcpt:` or `ip:` and an unkeyed SHA-256 of a
//! user id, mailbox key or IP: anyone holding the table and a guess could confirm the
//! guess, so erasure had to delete them. From here on a bucket is `u:`, `r:`, `c:` or `w:`
//! and an HMAC under a key derived from the token keys (`Keyring::limit_bucket`), which
//! erasure keeps. The service cannot compute the new key of an old bucket from its
//! digest, so the old buckets are deleted: every limit's window starts afresh once, at
//! this migration (at most one window's worth of each: 10 requests per user, 5 mails per
//! inbox, 20 failed link attempts per IP). Rows an older replica still writes during a
//! rolling upgrade use the old names; nothing reads them, and retention prunes them once
//! their window has passed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DELETE FROM rate_limits \
                 WHERE bucket LIKE 'user:%' OR bucket LIKE 'rcpt:%' OR bucket LIKE 'ip:%'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The older release reads only the old names: its buckets start afresh, as ours
        // did going up.
        Ok(())
    }
}
