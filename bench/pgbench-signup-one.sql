-- The floor for one durable sign-up: every row RequestVerification writes (the user, two
-- rate-limit buckets, the flow, its token, the queued mail and the audit event), in ONE
-- statement, autocommit: one round trip and one commit, no rules checked. The service is
-- measured against this in BENCHMARKS.md (bench/run.sh).
\set n random(1, 2000000000)
WITH u AS (
  INSERT INTO users (user_id, email, email_key, email_verified, created_at, updated_at)
  VALUES ('one-' || :client_id || '-' || :n, 'u' || :n || '@bench.example', 'u' || :n || '@bench.example', false, 0, 0)
  ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = 1
  RETURNING user_id),
lu AS (
  INSERT INTO rate_limits (bucket, tat) VALUES ('user:one-' || :client_id || '-' || :n, 1)
  ON CONFLICT (bucket) DO UPDATE SET tat = rate_limits.tat + 1),
lr AS (
  INSERT INTO rate_limits (bucket, tat) VALUES ('rcpt:u' || :n || '@bench.example', 1)
  ON CONFLICT (bucket) DO UPDATE SET tat = rate_limits.tat + 1),
f AS (
  INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, locale, expires_at, resend_available_at, created_at, updated_at)
  VALUES (gen_random_uuid()::text, 'one-' || :client_id || '-' || :n, 'verify', 'confirm_new', 'completed', 'u' || :n || '@bench.example', 'en', 0, 0, 0, 0)
  RETURNING flow_id),
t AS (
  INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, code_digest)
  SELECT md5(random()::text) || md5(random()::text), flow_id, 'confirm_new', 'live', 0, 0, md5(random()::text) FROM f),
m AS (
  INSERT INTO outbox (mail_id, user_id, flow_id, template, recipient, locale, params, sealed_link, state, attempts, next_attempt_at, created_at)
  SELECT gen_random_uuid()::text, 'one-' || :client_id || '-' || :n, flow_id, 'verify_link', 'u' || :n || '@bench.example', 'en', '{}', md5(random()::text), 'sent', 0, 0, 0 FROM f)
INSERT INTO events (user_id, flow_id, event_type, masked_address, at, actor, request_id)
SELECT 'one-' || :client_id || '-' || :n, flow_id, 'verification_requested', 'u***@bench.example', 0, 'api', '' FROM f;
