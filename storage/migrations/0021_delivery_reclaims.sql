-- How many times in a row a delivery's lease ran out before any outcome was recorded: a worker
-- stopped (SIGKILL, a crash, the database away too long) mid-attempt, and another claimed the
-- row again. A message that kills or wedges its worker every time would otherwise be claimed,
-- and perhaps sent, once per lease for ever, never counted as an attempt nor judged by the
-- queue's age limit. Past a few (mta/delivery/pipeline.py: MAX_RECLAIMS) it is failed instead.
-- Set back to 0 by every recorded outcome. The constant default makes this ALTER instant.
ALTER TABLE deliveries ADD COLUMN reclaims int NOT NULL DEFAULT 0;
