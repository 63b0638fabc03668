-- The ONE statement of a change's first confirmation, the link sent to the CURRENT
-- address (ConfirmLink, the link pages' POST; PostgreSQL, `store/optimistic.rs`), sent
-- outside a transaction block after the confirmation's one read (the token, its flow and
-- its user): the token used, the flow moved to its second step, the user's row (its
-- version: nobody else wrote it meanwhile), the second link, to the NEW address, and its
-- mail, the audit events, and the per-recipient limit's step. All or nothing: the verdict
-- at the end raises an error, which undoes every part, when
--   * the token or the user's row is no longer as read (SQLSTATE 40001: it runs again),
--   * or a limit's step did not fit (SQLSTATE EV429, message: the limit's label).
-- No two parts touch the same row, so the order they run in does not matter.
--
-- Parameters: $1-$3 one JSON object each (one row, found by its primary key); $4-$7
-- a JSON array of rows each (empty: nothing of that kind):
--   $1  the token to use        {digest, used_at}
--       (guard: it is still live and unexpired at used_at)
--   $2  the user's row as read  {user_id, version} (guard: its version is still that one)
--   $3  the flow, moved to its second step   {flow_id, step, state, expires_at,
--       resend_available_at, updated_at, failed_codes, locked_until}
--   $4  new tokens     every column of `tokens` (the second link)
--   $5  new mails      every column of `outbox`
--   $6  new events     {user_id, flow_id, event_type, masked_address, detail, at, actor, request_id}
--   $7  the limits' steps   {bucket, now, emission, period, label}; each must fit
WITH
token_used AS (
  UPDATE tokens SET state = 'used', used_at = c.used_at
    FROM jsonb_populate_record(NULL::tokens, $1::jsonb) AS c
   WHERE tokens.digest = c.digest AND tokens.state = 'live' AND tokens.expires_at > c.used_at
  RETURNING tokens.digest
),
user_updated AS (
  UPDATE users
     SET version = emailverify_next_version()
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
new_tokens AS (
  INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, used_at, code_digest)
  SELECT digest, flow_id, step, state, expires_at, created_at, used_at, code_digest
    FROM jsonb_populate_recordset(NULL::tokens, $4::jsonb)
),
new_mails AS (
  INSERT INTO outbox (mail_id, user_id, flow_id, template, recipient, locale, params,
                      sealed_link, state, attempts, next_attempt_at, claimed_until,
                      claimed_by, last_error, created_at, sent_at, bounce)
  SELECT mail_id, user_id, flow_id, template, recipient, locale, params,
         sealed_link, state, attempts, next_attempt_at, claimed_until,
         claimed_by, last_error, created_at, sent_at, bounce
    FROM jsonb_populate_recordset(NULL::outbox, $5::jsonb)
),
new_events AS (
  INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id)
  SELECT user_id, flow_id, event_type, masked_address, detail, at, actor, request_id
    FROM jsonb_populate_recordset(NULL::events, $6::jsonb)
),
wanted AS (
  SELECT * FROM jsonb_to_recordset($7::jsonb)
    AS s(bucket text, now bigint, emission bigint, period bigint, label text)
),
-- GCRA: each step applies only if its event fits (the formula of `Rate::check`).
stepped AS (
  INSERT INTO rate_limits AS r (bucket, tat)
  SELECT bucket, now + emission FROM wanted
  ON CONFLICT (bucket) DO UPDATE
     SET tat = GREATEST(r.tat, (SELECT w.now FROM wanted w WHERE w.bucket = excluded.bucket))
               + (SELECT w.emission FROM wanted w WHERE w.bucket = excluded.bucket)
   WHERE (SELECT GREATEST(r.tat, w.now) + w.emission - w.period <= w.now
            FROM wanted w WHERE w.bucket = excluded.bucket)
  RETURNING bucket
)
SELECT emailverify_verdict(
  -- the guards: the token and the user's row, each exactly as read
  (SELECT count(*) FROM token_used) = 1 AND (SELECT count(*) FROM user_updated) = 1,
  -- the first step that did not fit, by its label
  (SELECT w.label FROM wanted w WHERE w.bucket NOT IN (SELECT bucket FROM stepped) LIMIT 1)
) AS ok
