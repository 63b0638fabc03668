-- A request's ONE statement (RequestVerification, RequestChange; PostgreSQL,
-- `store/optimistic.rs`), sent outside a transaction block after the request's one read:
-- the user's row, the new flow with its first link and mail, the audit events, and the
-- limits' steps. All or nothing: the verdict at the end raises an error, which undoes
-- every part, when
--   * the user's row is no longer as the request read it (SQLSTATE 40001: it runs again),
--   * or a limit's step did not fit (SQLSTATE EV429, message: the limit's label).
-- No two parts touch the same row, so the order they run in does not matter.
--
-- Parameters: typed values, a column each (the cheapest way in: no JSON to take apart).
-- A request with more rows of a kind than this statement has room for runs locked.
--   $1-$8    the user's row as the request read it: user_id, version, created_at,
--            updated_at, and what the request sets (NULL email: the address stays):
--            email, email_key, email_verified, verified_at.
--            version NULL: there was no row, so it is inserted (guard: nobody inserted it
--            since); else it is updated only while its version is still that one (guard).
--   $9-$22   the new flow, every column of `flows` in order (flow_id NULL: none)
--   $23-$30  its token, every column of `tokens` in order (digest NULL: none)
--   $31-$47  its mail, every column of `outbox` in order (mail_id NULL: none)
--   $48-$55  its event: user_id, flow_id, event_type, masked_address, detail, at, actor,
--            request_id (event_type NULL: none)
--   $56-$70  up to three limits' steps, five values each: bucket, now, emission, period,
--            label (bucket NULL: none); each must fit
WITH
user_inserted AS (
  INSERT INTO users (user_id, email, email_key, email_verified, verified_at, created_at, updated_at)
  SELECT $1::text, $5::text, $6::text, COALESCE($7::boolean, false), $8::bigint, $3::bigint, $4::bigint
   WHERE $2::bigint IS NULL
  ON CONFLICT (user_id) DO NOTHING
  RETURNING user_id
),
user_updated AS (
  UPDATE users
     SET version = emailverify_next_version(),
         email = COALESCE($5::text, users.email),
         email_key = CASE WHEN $5::text IS NULL THEN users.email_key ELSE $6::text END,
         email_verified = CASE WHEN $5::text IS NULL THEN users.email_verified ELSE $7::boolean END,
         verified_at = CASE WHEN $5::text IS NULL THEN users.verified_at ELSE $8::bigint END,
         updated_at = CASE WHEN $5::text IS NULL THEN users.updated_at ELSE $4::bigint END
   -- `$2 IS NOT NULL` first: for a new user the plan stops there (a one-time filter)
   -- instead of looking the user up by key to find no version to match.
   WHERE $2::bigint IS NOT NULL AND users.user_id = $1::text AND users.version = $2::bigint
  RETURNING users.user_id
),
new_flow AS (
  INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, old_email, locale,
                     expires_at, resend_available_at, created_at, updated_at, failed_codes,
                     locked_until)
  SELECT $9::text, $10::text, $11::text, $12::text, $13::text, $14::text, $15::text, $16::text,
         $17::bigint, $18::bigint, $19::bigint, $20::bigint, $21::integer, $22::bigint
   WHERE $9::text IS NOT NULL
),
new_token AS (
  INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, used_at, code_digest)
  SELECT $23::text, $24::text, $25::text, $26::text, $27::bigint, $28::bigint, $29::bigint, $30::text
   WHERE $23::text IS NOT NULL
),
new_mail AS (
  INSERT INTO outbox (mail_id, user_id, flow_id, template, recipient, locale, params,
                      sealed_link, state, attempts, next_attempt_at, claimed_until,
                      last_error, created_at, sent_at, claimed_by, bounce)
  SELECT $31::text, $32::text, $33::text, $34::text, $35::text, $36::text, $37::text,
         $38::text, $39::text, $40::integer, $41::bigint, $42::bigint,
         $43::text, $44::bigint, $45::bigint, $46::text, $47::text
   WHERE $31::text IS NOT NULL
),
new_event AS (
  INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id)
  SELECT $48::text, $49::text, $50::text, $51::text, $52::text, $53::bigint, $54::text, $55::text
   WHERE $50::text IS NOT NULL
),
-- GCRA: each step applies only if its event fits (the formula of `Rate::check`).
step1 AS (
  INSERT INTO rate_limits AS r (bucket, tat)
  SELECT $56::text, $57::bigint + $58::bigint
   WHERE $56::text IS NOT NULL
  ON CONFLICT (bucket) DO UPDATE
     SET tat = GREATEST(r.tat, $57::bigint) + $58::bigint
   WHERE GREATEST(r.tat, $57::bigint) + $58::bigint - $59::bigint <= $57::bigint
  RETURNING 1
),
step2 AS (
  INSERT INTO rate_limits AS r (bucket, tat)
  SELECT $61::text, $62::bigint + $63::bigint
   WHERE $61::text IS NOT NULL
  ON CONFLICT (bucket) DO UPDATE
     SET tat = GREATEST(r.tat, $62::bigint) + $63::bigint
   WHERE GREATEST(r.tat, $62::bigint) + $63::bigint - $64::bigint <= $62::bigint
  RETURNING 1
),
step3 AS (
  INSERT INTO rate_limits AS r (bucket, tat)
  SELECT $66::text, $67::bigint + $68::bigint
   WHERE $66::text IS NOT NULL
  ON CONFLICT (bucket) DO UPDATE
     SET tat = GREATEST(r.tat, $67::bigint) + $68::bigint
   WHERE GREATEST(r.tat, $67::bigint) + $68::bigint - $69::bigint <= $67::bigint
  RETURNING 1
)
SELECT emailverify_verdict(
  -- the guard: the user's row exactly as the request read it
  (SELECT count(*) FROM user_inserted) + (SELECT count(*) FROM user_updated) = 1,
  -- the first step that did not fit, by its label
  CASE WHEN $56::text IS NOT NULL AND NOT EXISTS (SELECT FROM step1) THEN $60::text
       WHEN $61::text IS NOT NULL AND NOT EXISTS (SELECT FROM step2) THEN $65::text
       WHEN $66::text IS NOT NULL AND NOT EXISTS (SELECT FROM step3) THEN $70::text
  END
) AS ok
