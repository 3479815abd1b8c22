-- Migration 0021 counted a reclaim for every row of a claim whose lease ran out, so the rows
-- claimed beside a message that kills its worker were counted with it, attempted or not, and
-- failed with it after a few crashes. Now a row's reclaim counts only when its own attempt had
-- begun: the worker sets this just before attempting a row that was reclaimed already, and
-- every claim clears it. A row's first reclaim still counts unconditionally, which keeps the
-- everyday attempt (never reclaimed) free of this extra write (mta/delivery/pipeline.py).
ALTER TABLE deliveries ADD COLUMN attempt_began boolean NOT NULL DEFAULT false;
