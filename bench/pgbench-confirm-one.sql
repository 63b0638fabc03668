-- The floor for one durable link confirmation: what ConfirmLink changes (the token used,
-- the flow completed, the user's address verified, the audit event) in ONE statement,
-- autocommit, on the next live token of the ones bench/run.sh seeds (pgbench-confirm-seed.sql).
-- No rules checked: one round trip and one commit.
WITH t AS (
  UPDATE tokens SET state = 'used', used_at = 1
  WHERE digest = (SELECT md5('seed' || i) || md5('token' || i) FROM (SELECT nextval('confirm_seed') AS i) n)
    AND state = 'live'
  RETURNING flow_id),
f AS (
  UPDATE flows SET state = 'completed', updated_at = 1
  WHERE flow_id = (SELECT flow_id FROM t)
  RETURNING user_id, new_email, flow_id),
u AS (
  UPDATE users SET email = f.new_email, email_verified = true, verified_at = 1, updated_at = 1
  FROM f WHERE users.user_id = f.user_id)
INSERT INTO events (user_id, flow_id, event_type, masked_address, at, actor, request_id)
SELECT user_id, flow_id, 'email_verified', 'u***@bench.example', 1, 'api', '' FROM f;
