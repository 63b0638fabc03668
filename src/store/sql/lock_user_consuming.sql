-- A locked link confirmation's first write (PostgreSQL): the user's row locked (its
-- version bumped, so an optimistic use-case that read it knows it changed), then the
-- token consumed if it is still live and unexpired. User first, as every use-case
-- locks; the token's update re-checks the newest version of its row, so of concurrent
-- confirmations exactly one consumes it.
--   $1 user_id   $2 the token's digest   $3 now (ms)
-- Answers the user's row (none: no such user) and `counted`: 1 if the token was consumed.
WITH
locked AS (
  UPDATE users SET version = emailverify_next_version() WHERE user_id = $1
  RETURNING user_id, email, email_key, email_verified, verified_at, created_at, updated_at,
            change_frozen_until
),
consumed AS (
  UPDATE tokens SET state = 'used', used_at = $3
   WHERE digest = $2 AND state = 'live' AND expires_at > $3
  RETURNING digest
)
SELECT locked.*, (SELECT count(*) FROM consumed) AS counted FROM locked
