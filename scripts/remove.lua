-- remove: delete one job that is not active. ARGV[3] = id.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: removed (id).
-- Rust side: common/src/moves/remove.rs.
-- Returns OK, NOT_FOUND or JOB_ACTIVE. Removing a waiting or completed job
-- scans its list (LREM), like removing from the middle of any queue.
-- A parent waiting for children: its children that have not ended are
-- removed too (a running one's lease revoked), in bounded calls (see
-- queue_cascade in prelude.lua and flow.lua 'cascade').
return remove_job(ARGV[3], false)
