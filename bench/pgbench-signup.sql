-- The database ceiling for one sign-up: the same writes RequestVerification makes, in one
-- transaction (user upsert + flow + token + outbox insert), with nothing around them.
-- Run on a database migrated by `emailverify migrate` (see BENCHMARKS.md).
\set n random(1, 2000000000)
BEGIN;
INSERT INTO users (user_id, email, email_verified, created_at, updated_at)
  VALUES ('pg-' || :client_id || '-' || :n, NULL, false, 0, 0)
  ON CONFLICT (user_id) DO NOTHING;
SELECT user_id FROM users WHERE user_id = 'pg-' || :client_id || '-' || :n FOR UPDATE;
UPDATE users SET email = 'u' || :n || '@bench.example', updated_at = 1
  WHERE user_id = 'pg-' || :client_id || '-' || :n;
INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, locale, expires_at, resend_available_at, created_at, updated_at)
  VALUES (gen_random_uuid()::text, 'pg-' || :client_id || '-' || :n, 'verify', 'confirm_new', 'completed', 'u' || :n || '@bench.example', 'en', 0, 0, 0, 0);
INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, code_digest)
  VALUES (md5(random()::text) || md5(random()::text), gen_random_uuid()::text, 'confirm_new', 'live', 0, 0, md5(random()::text));
INSERT INTO outbox (mail_id, user_id, template, recipient, locale, params, sealed_link, state, attempts, next_attempt_at, created_at)
  VALUES (gen_random_uuid()::text, 'pg-' || :client_id || '-' || :n, 'verify_link', 'u' || :n || '@bench.example', 'en', '{}', md5(random()::text), 'sent', 0, 0, 0);
COMMIT;
