-- The registry's named state. Every name and digest is compared in byte order (COLLATE "C"),
-- so listings sort as the filesystem backend's do whatever locale the database was made with,
-- and keyset pagination (`WHERE name > $after ORDER BY name`) uses the primary-key indexes.
-- `touched` columns are what garbage collection's grace period is measured against; every
-- write stamps them with the database's clock, one clock for all replicas.

-- A repository exists once anything was linked, pushed or tagged in it (the catalog).
CREATE TABLE repositories (
    name text COLLATE "C" PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Which blobs a repository may read.
CREATE TABLE blob_links (
    repository text COLLATE "C" NOT NULL REFERENCES repositories (name),
    digest text COLLATE "C" NOT NULL,
    touched timestamptz NOT NULL,
    PRIMARY KEY (repository, digest)
);

-- Manifests a repository holds; the row is also its referrers-index entry (by subject), so
-- a manifest and its entry appear and disappear together.
CREATE TABLE manifests (
    repository text COLLATE "C" NOT NULL REFERENCES repositories (name),
    digest text COLLATE "C" NOT NULL,
    media_type text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    subject text COLLATE "C",
    artifact_type text,
    annotations jsonb NOT NULL DEFAULT '{}',
    touched timestamptz NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository, subject, digest)
    WHERE subject IS NOT NULL;

-- A tag points at a manifest of its repository; deleting the manifest deletes its tags in the
-- same statement, so no tag ever points at a missing manifest.
CREATE TABLE tags (
    repository text COLLATE "C" NOT NULL REFERENCES repositories (name),
    name text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    touched timestamptz NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_digest ON tags (repository, digest);

-- Upload sessions in progress; their data lives in the blob store. An upload alone does not
-- make a repository appear in the catalog. `started_ns` is the session's own start time in
-- nanoseconds since the Unix epoch, kept exactly as the replica recorded it.
CREATE TABLE uploads (
    id uuid PRIMARY KEY,
    repository text COLLATE "C" NOT NULL,
    started_ns bigint NOT NULL
);
