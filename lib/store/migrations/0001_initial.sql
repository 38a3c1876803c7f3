-- Tributary store, version 1: sources, runs, objects and the page-writer functions.
--
-- {{schema}} is replaced by the quoted schema name when the migration is applied. Tables are
-- internal: users read the views of migration 0002 (the documented read API, see README.md).

-- One row per SyncJob (namespace/name). fence_token/fence_lease are the fencing high-water mark:
-- the newest lock fencing token that began a run, and the lease that claimed it.
CREATE TABLE {{schema}}.sources (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  namespace     text NOT NULL,
  name          text NOT NULL,
  connector     text NOT NULL DEFAULT '',
  fence_token   bigint NOT NULL DEFAULT 0,
  fence_lease   text NOT NULL DEFAULT '',
  -- The last run whose complete listing was applied (deletion policy ran): every object of this
  -- source not missing was listed by it. Drives objects' derived last_seen.
  listed_run    bigint,
  listed_at     timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (namespace, name)
);

-- Listings: a run has one; Clean starts a new one. Objects written by a listing carry its id; the
-- unchanged objects it re-sent are recorded in the UNLOGGED table seen_<listing id>.
CREATE SEQUENCE {{schema}}.listing_seq;

CREATE TABLE {{schema}}.runs (
  id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source_id          bigint NOT NULL REFERENCES {{schema}}.sources (id) ON DELETE CASCADE,
  holder             text NOT NULL,
  fence_token        bigint NOT NULL,
  fence_lease        text NOT NULL,
  attempt            integer NOT NULL DEFAULT 1,
  deletion_policy    text NOT NULL CHECK (deletion_policy IN ('Keep', 'Mark', 'Delete')),
  listing_id         bigint NOT NULL,
  started_at         timestamptz NOT NULL DEFAULT now(),
  finished_at        timestamptz,
  outcome            text NOT NULL DEFAULT 'running'
                     CHECK (outcome IN ('running', 'succeeded', 'failed', 'abandoned')),
  pages              bigint NOT NULL DEFAULT 0,
  objects_received   bigint NOT NULL DEFAULT 0,
  objects_inserted   bigint NOT NULL DEFAULT 0,
  objects_updated    bigint NOT NULL DEFAULT 0,
  objects_unchanged  bigint NOT NULL DEFAULT 0,
  objects_revived    bigint NOT NULL DEFAULT 0,
  objects_duplicate  bigint NOT NULL DEFAULT 0,
  objects_missing    bigint NOT NULL DEFAULT 0,
  objects_marked     bigint NOT NULL DEFAULT 0,
  objects_deleted    bigint NOT NULL DEFAULT 0,
  cleans             integer NOT NULL DEFAULT 0,
  -- Rows put into seen_<listing_id> (crash-safe count: the UNLOGGED table is emptied by a
  -- crash, this counter is not, so a lost seen-set is detected before any deletion).
  seen_count         bigint NOT NULL DEFAULT 0,
  deletion_applied   boolean NOT NULL DEFAULT false,
  connector_metadata text,
  error              text,
  note               text
);
CREATE INDEX runs_source_idx ON {{schema}}.runs (source_id, id DESC);
CREATE INDEX runs_running_idx ON {{schema}}.runs (source_id) WHERE outcome = 'running';

-- One row per (source, remote_id). No foreign key to sources on purpose: a per-row RI check
-- would cost more than the rest of an unchanged-row write; sources are deleted through the API.
--   seen_at/seen_run: when the row was last written, or (once missing) the last run that listed
--                     it. The read API derives last_seen from this and sources.listed_*.
--   listing_id:       the listing that last wrote the row (stale detection).
--   missing_since:    the first successful run that did not list it (any deletion policy).
--   deleted_at:       soft-deleted by the Mark policy.
CREATE TABLE {{schema}}.objects (
  source_id         bigint NOT NULL,
  remote_id         text COLLATE "C" NOT NULL,
  resource_name     text NOT NULL,
  uri               text NOT NULL,
  metadata          text NOT NULL,
  metadata_json     jsonb,
  first_seen        timestamptz NOT NULL,
  first_run         bigint NOT NULL,
  last_changed      timestamptz NOT NULL,
  last_changed_run  bigint NOT NULL,
  seen_at           timestamptz NOT NULL,
  seen_run          bigint NOT NULL,
  listing_id        bigint NOT NULL,
  missing_since     timestamptz,
  missing_run       bigint,
  deleted_at        timestamptz,
  PRIMARY KEY (source_id, remote_id)
);

-- The fence of every page and of Clean/finish, run inside the writing transaction.
-- Locks the source row FOR SHARE: a newer writer's beginRun (which updates that row) waits for
-- this transaction, and this check waits for (and then sees) a newer writer's claim, so pages of
-- two lease holders are totally ordered and an older one can never commit after a newer claim.
-- p_seq > 0 also makes the page exactly-once: it must be the run's next page.
CREATE FUNCTION {{schema}}.check_fence(p_source bigint, p_token bigint, p_lease text,
                                       p_run bigint, p_seq bigint) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
  v_token   bigint;
  v_lease   text;
  v_pages   bigint;
  v_outcome text;
BEGIN
  SELECT fence_token, fence_lease INTO v_token, v_lease
    FROM {{schema}}.sources WHERE id = p_source FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'source % does not exist', p_source USING ERRCODE = 'TR002';
  END IF;
  IF v_token <> p_token OR v_lease <> p_lease THEN
    RAISE EXCEPTION 'fenced: the source now belongs to fencing token % (this writer holds %)',
      v_token, p_token USING ERRCODE = 'TR001';
  END IF;
  SELECT pages, outcome INTO v_pages, v_outcome FROM {{schema}}.runs WHERE id = p_run;
  IF NOT FOUND OR v_outcome <> 'running' THEN
    RAISE EXCEPTION 'run % is not running (%)', p_run, coalesce(v_outcome, 'missing')
      USING ERRCODE = 'TR002';
  END IF;
  IF p_seq > 0 AND v_pages >= p_seq THEN
    RAISE EXCEPTION 'page % of run % is already committed', p_seq, p_run USING ERRCODE = 'TR003';
  END IF;
  IF p_seq > 0 AND v_pages <> p_seq - 1 THEN
    RAISE EXCEPTION 'page % of run % out of order (run has % pages)', p_seq, p_run, v_pages
      USING ERRCODE = 'TR002';
  END IF;
  RETURN true;
END
$fn$;

-- Slow, never-failing text -> jsonb (NULL when PostgreSQL cannot parse or store it). Only used
-- when the fast path (client-side validation plus a plain cast) failed for a page.
CREATE FUNCTION {{schema}}.try_jsonb(p_text text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
BEGIN
  RETURN p_text::jsonb;
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END
$fn$;
