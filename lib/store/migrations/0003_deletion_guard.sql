-- The deletion guard (README.md, "Deletion guard"): a successful run that would mark or delete
-- more than the allowed share of a source's live objects deletes nothing and records what it held
-- back. Columns are added at the end of sync_runs: the read API only ever gains columns.
ALTER TABLE {{schema}}.runs
  ADD COLUMN max_delete_percent integer,
  ADD COLUMN deletion_confirmed boolean NOT NULL DEFAULT false,
  ADD COLUMN deletion_guarded   boolean NOT NULL DEFAULT false,
  ADD COLUMN objects_guarded    bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE VIEW {{schema}}.sync_runs AS
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
  r.source_id,
  r.deletion_guarded,
  r.objects_guarded,
  r.max_delete_percent,
  r.deletion_confirmed
FROM {{schema}}.runs r
JOIN {{schema}}.sources s ON s.id = r.source_id;
