-- The read ConfirmLink makes before its one statement: the token, its flow and its user,
-- by the token's digest, with the service's own SELECT (`store/tokens.rs`,
-- `token_with_flow_and_user`), of a seeded token (pgbench-confirm-seed.sql). Run
-- with `-M prepared`, as the service sends it: what the read costs PostgreSQL per
-- confirmation, beside the one-statement confirmation (pgbench-confirm-one.sql) that reads
-- nothing.
\set i random(1, 200000)
SELECT q.*, u.user_id AS "C_user_id", u.email AS "C_email", u.email_key AS "C_email_key", u.email_verified AS "C_email_verified", u.verified_at AS "C_verified_at", u.created_at AS "C_created_at", u.updated_at AS "C_updated_at", u.change_frozen_until AS "C_change_frozen_until", u.version AS user_version
FROM (SELECT "tokens"."digest" AS "A_digest", "tokens"."flow_id" AS "A_flow_id", "tokens"."step" AS "A_step", "tokens"."state" AS "A_state", "tokens"."expires_at" AS "A_expires_at", "tokens"."created_at" AS "A_created_at", "tokens"."used_at" AS "A_used_at", "tokens"."code_digest" AS "A_code_digest", "flows"."flow_id" AS "B_flow_id", "flows"."user_id" AS "B_user_id", "flows"."kind" AS "B_kind", "flows"."step" AS "B_step", "flows"."state" AS "B_state", "flows"."new_email" AS "B_new_email", "flows"."old_email" AS "B_old_email", "flows"."locale" AS "B_locale", "flows"."expires_at" AS "B_expires_at", "flows"."resend_available_at" AS "B_resend_available_at", "flows"."created_at" AS "B_created_at", "flows"."updated_at" AS "B_updated_at", "flows"."failed_codes" AS "B_failed_codes", "flows"."locked_until" AS "B_locked_until" FROM "tokens" INNER JOIN "flows" ON "tokens"."flow_id" = "flows"."flow_id" WHERE "tokens"."digest" IN (md5('seed' || :i) || md5('token' || :i))) q
LEFT JOIN users u ON u.user_id = q."B_user_id";
