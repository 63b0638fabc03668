-- A request's ONE statement (RequestVerification, RequestChange; PostgreSQL,
-- `store/optimistic.rs`), sent outside a transaction block after the request's one read:
-- the user's row, the new flow with its first link and mail, the audit events, and the
-- limits' steps. All or nothing: the verdict at the end raises an error, which undoes
-- every part, when
--   * the user's row is no longer as the request read it (SQLSTATE 40001: it runs again),
--   * or a limit's step did not fit (SQLSTATE EV429, message: the limit's label).
-- No two parts touch the same row, so the order they run in does not matter.
--
-- Parameters: $1 one JSON object; $2-$6 a JSON array of rows each (empty: nothing of
-- that kind):
--   $1  the user's row as the request read it:
--       {user_id, version, created_at, updated_at} and, when the request sets the address
--       of record, {email, email_key, email_verified, verified_at}.
--       version NULL: there was no row, so it is inserted (guard: nobody inserted it since);
--       else it is updated only while its version is still that one (guard).
--   $2  the new flow        every column of `flows`
--   $3  its new token       every column of `tokens`
--   $4  its new mails       every column of `outbox`
--   $5  new events          {user_id, flow_id, event_type, masked_address, detail, at, actor, request_id}
--   $6  the limits' steps   {bucket, now, emission, period, label}; each must fit
WITH
expected AS (
  SELECT * FROM jsonb_populate_record(NULL::users, $1::jsonb)
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
  RETURNING users.user_id
),
new_flows AS (
  INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, old_email, locale,
                     expires_at, resend_available_at, created_at, updated_at, failed_codes,
                     locked_until)
  SELECT flow_id, user_id, kind, step, state, new_email, old_email, locale,
         expires_at, resend_available_at, created_at, updated_at, failed_codes, locked_until
    FROM jsonb_populate_recordset(NULL::flows, $2::jsonb)
),
new_tokens AS (
  INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, used_at, code_digest)
  SELECT digest, flow_id, step, state, expires_at, created_at, used_at, code_digest
    FROM jsonb_populate_recordset(NULL::tokens, $3::jsonb)
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
),
wanted AS (
  SELECT * FROM jsonb_to_recordset($6::jsonb)
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
  -- the guard: the user's row exactly as the request read it
  (SELECT count(*) FROM user_inserted) + (SELECT count(*) FROM user_updated) = 1,
  -- the first step that did not fit, by its label
  (SELECT w.label FROM wanted w WHERE w.bucket NOT IN (SELECT bucket FROM stepped) LIMIT 1)
) AS ok
