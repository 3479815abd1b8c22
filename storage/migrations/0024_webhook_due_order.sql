-- Each endpoint's queue in due order, then id (storage/webhooks/outbox.py, the cycle's `head`).
-- Deliveries written in one transaction share their next_attempt_at (its default is now(), and a
-- cycle's failures are rescheduled by the same now() + retry); without the id, tied rows came out
-- of the index in heap order, which a claim's update may change, so a leased row could leave the
-- head of its queue while another row took its place: more requests in flight than the cap.
-- The claim updates no column of this index, so its updates stay HOT.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at, id)
    WHERE status IN ('pending', 'attempting');
