-- Pending sign-ups with live tokens for pgbench-confirm-one.sql: :rows users, each with a
-- pending verify flow and its live token (as RequestVerification leaves them), and the
-- sequence that hands each confirmation the next one.
CREATE SEQUENCE IF NOT EXISTS confirm_seed;
INSERT INTO users (user_id, email, email_key, email_verified, created_at, updated_at)
  SELECT 'seed-' || i, 's' || i || '@bench.example', 's' || i || '@bench.example', false, 0, 0 FROM generate_series(1, :rows) i;
INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, locale, expires_at, resend_available_at, created_at, updated_at)
  SELECT 'seed-flow-' || i, 'seed-' || i, 'verify', 'confirm_new', 'pending', 's' || i || '@bench.example', 'en', 0, 0, 0, 0 FROM generate_series(1, :rows) i;
INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, code_digest)
  SELECT md5('seed' || i) || md5('token' || i), 'seed-flow-' || i, 'confirm_new', 'live', 0, 0, md5('code' || i) FROM generate_series(1, :rows) i;
