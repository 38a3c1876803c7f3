-- Tributary store, version 2: the read API. These views are the documented contract for users
-- (README.md, "Reading the data"); the tables behind them may change in later migrations.

-- Every object ever synced, with its state. last_seen is derived: a row is only rewritten when
-- its content changes, so for objects that were listed by the source's last complete listing
-- last_seen is that run's start time.
CREATE VIEW {{schema}}.object_versions AS
SELECT
  s.namespace,
  s.name AS sync_job,
  s.connector,
  o.remote_id,
  o.resource_name,
  o.uri,
  o.metadata,
  o.metadata_json,
  o.first_seen,
  o.first_run,
  CASE WHEN o.missing_since IS NULL AND s.listed_at > o.seen_at THEN s.listed_at
       ELSE o.seen_at END AS last_seen,
  CASE WHEN o.missing_since IS NULL AND s.listed_run > o.seen_run THEN s.listed_run
       ELSE o.seen_run END AS last_run,
  o.last_changed,
  o.last_changed_run,
  o.missing_since,
  o.deleted_at,
  CASE WHEN o.deleted_at IS NOT NULL THEN 'deleted'
       WHEN o.missing_since IS NOT NULL THEN 'missing'
       ELSE 'present' END AS state,
  o.source_id
FROM {{schema}}.objects o
JOIN {{schema}}.sources s ON s.id = o.source_id;

-- Objects not soft-deleted: "all live objects of SyncJob X" is
--   SELECT * FROM tributary.live_objects WHERE namespace = 'ns' AND sync_job = 'x';
-- Under the Keep policy objects no longer listed upstream stay live with state 'missing'.
CREATE VIEW {{schema}}.live_objects AS
SELECT * FROM {{schema}}.object_versions WHERE deleted_at IS NULL;

-- Run history, newest first per source.
CREATE VIEW {{schema}}.sync_runs AS
SELECT
  r.id AS run_id,
  s.namespace,
  s.name AS sync_job,
  s.connector,
  r.holder,
  r.fence_token,
  r.attempt,
  r.deletion_policy,
  r.outcome,
  r.started_at,
  r.finished_at,
  r.finished_at - r.started_at AS duration,
  r.pages,
  r.objects_received,
  r.objects_inserted + r.objects_updated AS objects_upserted,
  r.objects_inserted,
  r.objects_updated,
  r.objects_unchanged,
  r.objects_revived,
  r.objects_duplicate,
  r.objects_missing,
  r.objects_marked,
  r.objects_deleted,
  r.cleans,
  r.deletion_applied,
  r.connector_metadata,
  CASE WHEN r.connector_metadata IS NOT NULL AND r.connector_metadata <> ''
       THEN {{schema}}.try_jsonb(r.connector_metadata) END AS connector_metadata_json,
  r.error,
  r.note,
  r.source_id
FROM {{schema}}.runs r
JOIN {{schema}}.sources s ON s.id = r.source_id;

-- One row per SyncJob with its latest run and live object count.
CREATE VIEW {{schema}}.sync_jobs AS
SELECT
  s.namespace,
  s.name AS sync_job,
  s.connector,
  s.fence_token,
  s.listed_run AS last_complete_run,
  s.listed_at AS last_complete_listing_at,
  lr.run_id AS last_run,
  lr.outcome AS last_outcome,
  lr.started_at AS last_run_started_at,
  (SELECT count(*) FROM {{schema}}.objects o
    WHERE o.source_id = s.id AND o.deleted_at IS NULL) AS live_objects,
  s.id AS source_id
FROM {{schema}}.sources s
LEFT JOIN LATERAL (
  SELECT r.id AS run_id, r.outcome, r.started_at FROM {{schema}}.runs r
   WHERE r.source_id = s.id ORDER BY r.id DESC LIMIT 1) lr ON true;
