-- A locked use-case's first statement (PostgreSQL): the user's row, created if missing
-- and locked (the upsert's update takes the row lock and bumps its version, so an
-- optimistic use-case that read the row knows it changed), then one step of a rate-limit
-- bucket under that lock. Every statement of this shape locks the user first, then the
-- bucket (the main SELECT reads `locked` before the subquery runs `stepped`), so two
-- cannot deadlock.
--   $1 user_id   $2 now (ms)   $3 bucket   $4 the bucket's emission interval (ms)
--   $5 the bucket's period (ms)
-- Answers the user's row and `counted`: 1 if the step fitted and was taken, else 0.
WITH
locked AS (
  INSERT INTO users (user_id, email, email_verified, verified_at, created_at, updated_at)
  VALUES ($1, NULL, false, NULL, $2, $2)
  ON CONFLICT (user_id) DO UPDATE
     SET updated_at = excluded.updated_at, version = emailverify_next_version()
  RETURNING user_id, email, email_key, email_verified, verified_at, created_at, updated_at,
            change_frozen_until
),
-- GCRA: the step applies only if the event fits (the formula of `Rate::check`).
stepped AS (
  INSERT INTO rate_limits AS r (bucket, tat) VALUES ($3, $2 + $4)
  ON CONFLICT (bucket) DO UPDATE
     SET tat = GREATEST(r.tat, $2) + $4
   WHERE GREATEST(r.tat, $2) + $4 - $5 <= $2
  RETURNING bucket
)
SELECT locked.*, (SELECT count(*) FROM stepped) AS counted FROM locked
