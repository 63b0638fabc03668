//! The first schema: users, flows, tokens, the mail outbox and the audit trail.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // users: one row per wallet user that ever asked for anything.
        manager
            .create_table(
                Table::create()
                    .table("users")
                    .col(string_len("user_id", 128).primary_key())
                    // The address of record, normalised; verified or not.
                    .col(string_len_null("email", 254))
                    .col(boolean("email_verified").default(false))
                    .col(big_integer_null("verified_at"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;

        // flows: a verification or a change, with its current step. `expires_at` and
        // `resend_available_at` describe the current step's link.
        manager
            .create_table(
                Table::create()
                    .table("flows")
                    .col(string_len("flow_id", 36).primary_key())
                    .col(string_len("user_id", 128))
                    .col(string_len("kind", 16))
                    .col(string_len("step", 16))
                    .col(string_len("state", 16))
                    .col(string_len("new_email", 254))
                    .col(string_len_null("old_email", 254))
                    .col(string_len("locale", 8))
                    .col(big_integer("expires_at"))
                    .col(big_integer("resend_available_at"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("flows_user_id_idx")
                    .table("flows")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;

        // tokens: keyed digests only (HMAC-SHA-256, hex), never the token.
        manager
            .create_table(
                Table::create()
                    .table("tokens")
                    .col(string_len("digest", 64).primary_key())
                    .col(string_len("flow_id", 36))
                    .col(string_len("step", 16))
                    .col(string_len("state", 16))
                    .col(big_integer("expires_at"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("used_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tokens_flow_id_idx")
                    .table("tokens")
                    .col("flow_id")
                    .to_owned(),
            )
            .await?;

        // outbox: mails written in the same transaction as the state change that causes
        // them. The link is kept only sealed (AEAD) and erased once sent or dead.
        manager
            .create_table(
                Table::create()
                    .table("outbox")
                    .col(string_len("mail_id", 36).primary_key())
                    .col(string_len("user_id", 128))
                    .col(string_len_null("flow_id", 36))
                    .col(string_len("template", 32))
                    .col(string_len("recipient", 254))
                    .col(string_len("locale", 8))
                    .col(text("params"))
                    .col(text_null("sealed_link"))
                    .col(string_len("state", 16))
                    .col(integer("attempts").default(0))
                    .col(big_integer("next_attempt_at"))
                    .col(big_integer_null("claimed_until"))
                    .col(text_null("last_error"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("sent_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_due_idx")
                    .table("outbox")
                    .col("state")
                    .col("next_attempt_at")
                    .to_owned(),
            )
            .await?;

        // events: the append-only audit trail (masked addresses only).
        manager
            .create_table(
                Table::create()
                    .table("events")
                    .col(big_pk_auto("event_id"))
                    .col(string_len("user_id", 128))
                    .col(string_len_null("flow_id", 36))
                    .col(string_len("event_type", 48))
                    .col(string_len("masked_address", 260).default(""))
                    .col(string_len("detail", 256).default(""))
                    .col(big_integer("at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_user_idx")
                    .table("events")
                    .col("user_id")
                    .col("event_id")
                    .to_owned(),
            )
            .await?;

        // Partial unique indexes have the same syntax on PostgreSQL and SQLite.
        let db = manager.get_connection();
        // THE uniqueness rule: a normalised address is verified by at most one user.
        // Unverified claims block nobody, so they are outside the index.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX users_verified_email_key ON users (email) WHERE email_verified",
        )
        .await?;
        // At most one pending flow per user. The core locks the user's row before touching
        // flows, so this is a safety net that ordinary requests never trip.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX flows_one_pending_per_user ON flows (user_id) WHERE state = 'pending'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["events", "outbox", "tokens", "flows", "users"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
