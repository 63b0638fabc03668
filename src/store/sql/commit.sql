-- The ONE statement an optimistic use-case (a request, a link confirmation) commits
-- with, outside a transaction block: every write, the guards that say its reads still
-- hold, and its rate-limit steps (PostgreSQL; `store/optimistic.rs`). All or nothing:
-- the verdict at the end raises an error, which undoes every part, when
--   * a guard did not hold (SQLSTATE 40001: the use-case runs again), or
--   * a step did not fit (SQLSTATE EV429, message: the limit's label).
-- No two parts touch the same row, so the order they run in does not matter. Each update
-- names its rows by `= ANY (ARRAY(...))` too: an index condition whatever the planner
-- guesses of a JSON array's length (it guesses 100 rows).
--
-- Each parameter is a JSON array of rows (empty: nothing of that kind):
--   $1  the user's row as the use-case read it: {user_id, version, created_at, updated_at}
--       and, when it sets an address, {email, email_key, email_verified, verified_at}.
--       version NULL: there was no row, so it is inserted (guard: nobody inserted it since);
--       else the row is updated only while its version is still that one (guard).
--   $2  the token to consume: {digest, used_at} (guard: it is still live and unexpired)
--   $3  new flows     $4 flows moved to a step or state     $5 new tokens
--   $6  new mails     $7 new events                          (as in writes.sql)
--   $8  rate-limit steps: {bucket, now, emission, period, label}; each must fit
WITH
expected AS (
  SELECT * FROM jsonb_populate_recordset(NULL::users, $1::jsonb)
),
user_inserted AS (
  INSERT INTO users (user_id, email, email_key, email_verified, verified_at, created_at, updated_at)
  SELECT user_id, email, email_key, COALESCE(email_verified, false), verified_at, created_at, updated_at
    FROM expected WHERE version IS NULL
  ON CONFLICT (user_id) DO NOTHING
  RETURNING user_id
),
user_updated AS (
  UPDATE users
     SET version = emailverify_next_version(),
         email = COALESCE(e.email, users.email),
         email_key = CASE WHEN e.email IS NULL THEN users.email_key ELSE e.email_key END,
         email_verified = CASE WHEN e.email IS NULL THEN users.email_verified ELSE e.email_verified END,
         verified_at = CASE WHEN e.email IS NULL THEN users.verified_at ELSE e.verified_at END,
         updated_at = CASE WHEN e.email IS NULL THEN users.updated_at ELSE e.updated_at END
    FROM expected AS e
   WHERE e.version IS NOT NULL AND users.user_id = e.user_id AND users.version = e.version
     AND users.user_id = ANY (ARRAY(SELECT user_id FROM expected))
  RETURNING users.user_id
),
token_used AS (
  UPDATE tokens SET state = 'used', used_at = c.used_at
    FROM jsonb_populate_recordset(NULL::tokens, $2::jsonb) AS c
   WHERE tokens.digest = c.digest AND tokens.state = 'live' AND tokens.expires_at > c.used_at
     AND tokens.digest = ANY (ARRAY(SELECT c.digest FROM jsonb_populate_recordset(NULL::tokens, $2::jsonb) AS c))
  RETURNING tokens.digest
),
new_flows AS (
  INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, old_email, locale,
                     expires_at, resend_available_at, created_at, updated_at, failed_codes,
                     locked_until)
  SELECT flow_id, user_id, kind, step, state, new_email, old_email, locale,
         expires_at, resend_available_at, created_at, updated_at, failed_codes, locked_until
    FROM jsonb_populate_recordset(NULL::flows, $3::jsonb)
),
moved_flows AS (
  UPDATE flows
     SET step = m.step, state = m.state, expires_at = m.expires_at,
         resend_available_at = m.resend_available_at, updated_at = m.updated_at,
         failed_codes = m.failed_codes, locked_until = m.locked_until
    FROM jsonb_populate_recordset(NULL::flows, $4::jsonb) AS m
   WHERE flows.flow_id = m.flow_id
     AND flows.flow_id = ANY (ARRAY(SELECT m.flow_id FROM jsonb_populate_recordset(NULL::flows, $4::jsonb) AS m))
),
new_tokens AS (
  INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, used_at, code_digest)
  SELECT digest, flow_id, step, state, expires_at, created_at, used_at, code_digest
    FROM jsonb_populate_recordset(NULL::tokens, $5::jsonb)
),
new_mails AS (
  INSERT INTO outbox (mail_id, user_id, flow_id, template, recipient, locale, params,
                      sealed_link, state, attempts, next_attempt_at, claimed_until,
                      claimed_by, last_error, created_at, sent_at, bounce)
  SELECT mail_id, user_id, flow_id, template, recipient, locale, params,
         sealed_link, state, attempts, next_attempt_at, claimed_until,
         claimed_by, last_error, created_at, sent_at, bounce
    FROM jsonb_populate_recordset(NULL::outbox, $6::jsonb)
),
new_events AS (
  INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id)
  SELECT user_id, flow_id, event_type, masked_address, detail, at, actor, request_id
    FROM jsonb_populate_recordset(NULL::events, $7::jsonb)
),
wanted AS (
  SELECT * FROM jsonb_to_recordset($8::jsonb)
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
  -- the guards: the user's row and the token, each exactly as the use-case read it
  (SELECT count(*) FROM user_inserted) + (SELECT count(*) FROM user_updated)
      = jsonb_array_length($1::jsonb)
    AND (SELECT count(*) FROM token_used) = jsonb_array_length($2::jsonb),
  -- the first step that did not fit, by its label
  (SELECT w.label FROM wanted w WHERE w.bucket NOT IN (SELECT bucket FROM stepped) LIMIT 1)
) AS ok
