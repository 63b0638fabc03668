-- The ONE statement of a flow's last confirmation: a sign-up's link, or a change's second
-- link, to the NEW address (ConfirmLink, the link pages' POST; PostgreSQL,
-- `store/optimistic.rs`), sent outside a transaction block after the confirmation's one
-- read (the token, its flow and its user): the token used, the flow completed, the user's
-- address of record set verified, the change's notice to the old address, and the audit
-- events. All or nothing: the verdict at the end raises an error, which undoes every
-- part, when the token or the user's row is no longer as read (SQLSTATE 40001: it runs
-- again); the index of verified addresses refuses an inbox another user verified
-- meanwhile (SQLSTATE 23505: EMAIL_TAKEN).
-- No two parts touch the same row, so the order they run in does not matter.
--
-- Parameters: $1-$3 one JSON object each (one row, found by its primary key); $4-$5
-- a JSON array of rows each (empty: nothing of that kind):
--   $1  the token to use        {digest, used_at}
--       (guard: it is still live and unexpired at used_at)
--   $2  the user's row as read  {user_id, version, email, email_key, email_verified,
--       verified_at, updated_at} (guard: its version is still that one)
--   $3  the flow, completed     {flow_id, step, state, expires_at, resend_available_at,
--       updated_at, failed_codes, locked_until}
--   $4  new mails      every column of `outbox` (a change's notice to the old address)
--   $5  new events     {user_id, flow_id, event_type, masked_address, detail, at, actor, request_id}
WITH
token_used AS (
  UPDATE tokens SET state = 'used', used_at = c.used_at
    FROM jsonb_populate_record(NULL::tokens, $1::jsonb) AS c
   WHERE tokens.digest = c.digest AND tokens.state = 'live' AND tokens.expires_at > c.used_at
  RETURNING tokens.digest
),
user_updated AS (
  UPDATE users
     SET version = emailverify_next_version(), email = e.email, email_key = e.email_key,
         email_verified = e.email_verified, verified_at = e.verified_at,
         updated_at = e.updated_at
    FROM jsonb_populate_record(NULL::users, $2::jsonb) AS e
   WHERE users.user_id = e.user_id AND users.version = e.version
  RETURNING users.user_id
),
moved_flow AS (
  UPDATE flows
     SET step = m.step, state = m.state, expires_at = m.expires_at,
         resend_available_at = m.resend_available_at, updated_at = m.updated_at,
         failed_codes = m.failed_codes, locked_until = m.locked_until
    FROM jsonb_populate_record(NULL::flows, $3::jsonb) AS m
   WHERE flows.flow_id = m.flow_id
),
new_mails AS (
  INSERT INTO outbox (mail_id, user_id, flow_id, template, recipient, locale, params,
                      sealed_link, state, attempts, next_attempt_at, claimed_until,
                      claimed_by, last_error, created_at, sent_at, bounce)
  SELECT mail_id, user_id, flow_id, template, recipient, locale, params,
         sealed_link, state, attempts, next_attempt_at, claimed_until,
         claimed_by, last_error, created_at, sent_at, bounce
    FROM jsonb_populate_recordset(NULL::outbox, $4::jsonb)
),
new_events AS (
  INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id)
  SELECT user_id, flow_id, event_type, masked_address, detail, at, actor, request_id
    FROM jsonb_populate_recordset(NULL::events, $5::jsonb)
)
SELECT emailverify_verdict(
  -- the guards: the token and the user's row, each exactly as read
  (SELECT count(*) FROM token_used) = 1 AND (SELECT count(*) FROM user_updated) = 1,
  NULL::text
) AS ok
