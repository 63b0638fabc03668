-- The ONE statement of a flow's last confirmation that sends no mail: a sign-up's link
-- (ConfirmLink, the link pages' POST; PostgreSQL, `store/optimistic.rs`), sent outside a
-- transaction block after the confirmation's one read (the token, its flow and its user):
-- the token used, the flow completed, the user's address of record set verified, and the
-- audit events. (A change's last link also mails the old address: confirm_change.sql.
-- Apart, because every table a statement names costs each execution its locks and its
-- insert's setup, even when nothing is inserted.) All or nothing: the verdict at the end
-- raises an error, which undoes every part, when the token or the user's row is no longer
-- as read (SQLSTATE 40001: it runs again); the index of verified addresses refuses an
-- inbox another user verified meanwhile (SQLSTATE 23505: EMAIL_TAKEN).
-- No two parts touch the same row, so the order they run in does not matter.
--
-- Parameters: the one row of each kind as typed values, a column each (the cheapest way
-- in: no JSON to take apart); the parts that come in any number as JSON arrays.
--   $1-$2    the token to use: digest, used_at
--            (guard: it is still live and unexpired at used_at)
--   $3-$9    the user's row as read: user_id, version (guard: it is still that one), and
--            what it becomes: email, email_key, email_verified, verified_at, updated_at
--   $10-$17  the flow, completed: flow_id, step, state, expires_at, resend_available_at,
--            updated_at, failed_codes, locked_until
--   $18      new events, a JSON array: {user_id, flow_id, event_type, masked_address,
--            detail, at, actor, request_id}
WITH
token_used AS (
  UPDATE tokens SET state = 'used', used_at = $2::bigint
   WHERE tokens.digest = $1::text AND tokens.state = 'live' AND tokens.expires_at > $2::bigint
  RETURNING tokens.digest
),
user_updated AS (
  UPDATE users
     SET version = emailverify_next_version(), email = $5::text, email_key = $6::text,
         email_verified = $7::boolean, verified_at = $8::bigint, updated_at = $9::bigint
   WHERE users.user_id = $3::text AND users.version = $4::bigint
  RETURNING users.user_id
),
moved_flow AS (
  UPDATE flows
     SET step = $11::text, state = $12::text, expires_at = $13::bigint,
         resend_available_at = $14::bigint, updated_at = $15::bigint,
         failed_codes = $16::integer, locked_until = $17::bigint
   WHERE flows.flow_id = $10::text
),
new_events AS (
  INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id)
  SELECT user_id, flow_id, event_type, masked_address, detail, at, actor, request_id
    FROM jsonb_populate_recordset(NULL::events, $18::jsonb)
)
SELECT emailverify_verdict(
  -- the guards: the token and the user's row, each exactly as read
  (SELECT count(*) FROM token_used) = 1 AND (SELECT count(*) FROM user_updated) = 1,
  NULL::text
) AS ok
