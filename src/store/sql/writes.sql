-- A locked use-case's waiting writes, sent together as ONE statement before the
-- use-case's next read, or at its commit (PostgreSQL; `store/tx.rs` says which writes
-- may wait). No two parts touch the same row, so the order they run in does not matter.
--
-- Each parameter is a JSON array of rows (empty: nothing of that kind):
--   $1  the user's address to set       {user_id, email, email_key, email_verified, verified_at, updated_at}
--   $2  new flows                        every column of `flows`
--   $3  flows moved to a step or state   {flow_id, step, state, expires_at, resend_available_at, updated_at, failed_codes, locked_until}
--   $4  new tokens                       every column of `tokens`
--   $5  new mails                        every column of `outbox`
--   $6  new events                       {user_id, flow_id, event_type, masked_address, detail, at, actor, request_id}
--   $7  a rate-limit step to take with them   {bucket, now, emission, period}
-- Answers one row: `stepped`, the number of $7's steps that fitted and were taken.
WITH
address AS (
  UPDATE users
     SET email = a.email, email_key = a.email_key, email_verified = a.email_verified,
         verified_at = a.verified_at, updated_at = a.updated_at
    FROM jsonb_populate_recordset(NULL::users, $1::jsonb) AS a
   WHERE users.user_id = a.user_id
     AND users.user_id = ANY (ARRAY(SELECT a.user_id FROM jsonb_populate_recordset(NULL::users, $1::jsonb) AS a))
),
new_flows AS (
  INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, old_email, locale,
                     expires_at, resend_available_at, created_at, updated_at, failed_codes,
                     locked_until)
  SELECT flow_id, user_id, kind, step, state, new_email, old_email, locale,
         expires_at, resend_available_at, created_at, updated_at, failed_codes, locked_until
    FROM jsonb_populate_recordset(NULL::flows, $2::jsonb)
),
moved_flows AS (
  UPDATE flows
     SET step = m.step, state = m.state, expires_at = m.expires_at,
         resend_available_at = m.resend_available_at, updated_at = m.updated_at,
         failed_codes = m.failed_codes, locked_until = m.locked_until
    FROM jsonb_populate_recordset(NULL::flows, $3::jsonb) AS m
   WHERE flows.flow_id = m.flow_id
     AND flows.flow_id = ANY (ARRAY(SELECT m.flow_id FROM jsonb_populate_recordset(NULL::flows, $3::jsonb) AS m))
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
  SELECT * FROM jsonb_to_recordset($7::jsonb) AS s(bucket text, now bigint, emission bigint, period bigint)
),
-- GCRA: the step applies only if the event fits (the formula of `Rate::check`).
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
SELECT (SELECT count(*) FROM stepped) AS stepped
