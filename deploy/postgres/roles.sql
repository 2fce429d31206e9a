-- Passerelle on PostgreSQL with the least privileges.
--
-- Two roles:
--   passerelle_owner  NOLOGIN. Owns the database, the schema and every table. Migrations run
--                     as this role. Only it can CREATE, ALTER, DROP or TRUNCATE.
--   passerelle        LOGIN. The daemon. SELECT/INSERT/UPDATE/DELETE on the tables, USAGE on
--                     the sequences. On `events` only SELECT and INSERT: the log is append-only.
--                     On `_sqlx_migrations` only SELECT.
--
-- The tables (messages, recipients, events, and sqlx's _sqlx_migrations) are created by the
-- daemon's migrations (migrations/postgres/*.sql), not by this script.
--
-- Run it as a superuser (or a role with CREATEROLE and CREATEDB), with psql:
--
--   psql -v ON_ERROR_STOP=1 -d postgres -f deploy/postgres/roles.sql
--
-- The script can be run again at any time. Run it:
--   1. once before the first migration (it creates the roles, the database and the schema);
--   2. again after every `passerelle migrate` (it fixes the grants on the tables that now exist:
--      events append-only, _sqlx_migrations read-only, and warns about any table that is not
--      owned by passerelle_owner).
--
-- Migrations, then the daemon
-- ---------------------------
-- `passerelle serve` applies pending migrations at start. With this setup the daemon role cannot
-- create tables in the owner's schema, so the migrations must be applied beforehand, as the
-- owner, with `passerelle migrate`. passerelle_owner cannot log in; use one of these:
--
--   a) An administrator's login role that is a member of passerelle_owner, switching to it at
--      connection time with the `role` setting. Tables created this way are owned by
--      passerelle_owner:
--
--        GRANT passerelle_owner TO alice;          -- once, as a superuser
--
--      and a copy of the policy file where only the store URL differs:
--
--        [store]
--        url = "postgres://alice@db.internal/passerelle?options=-c%20role%3Dpasserelle_owner"
--
--        passerelle migrate --config /root/passerelle-migrate.toml
--
--      (`migrate` loads and checks the whole file like every command, so copy the production
--      file and change store.url; do not write a minimal one.)
--
--   b) Give the owner a login for the time of the migration, then take it away again:
--
--        ALTER ROLE passerelle_owner LOGIN PASSWORD '...';
--        -- store.url = "postgres://passerelle_owner:...@db.internal/passerelle"
--        -- passerelle migrate --config /root/passerelle-migrate.toml
--        ALTER ROLE passerelle_owner NOLOGIN PASSWORD NULL;   -- or run this script again
--
-- Then run this script again, and start the daemon with its own role:
--
--   [store]
--   url = "postgres://passerelle@db.internal/passerelle"     # password: see below
--
-- When every migration this binary knows is already applied, the daemon only reads
-- _sqlx_migrations at start and changes nothing, so it needs no CREATE on the schema. When one
-- is missing, `serve` tries to apply it and fails for lack of privileges: run `passerelle
-- migrate` as the owner first. Admin commands (`queue`, `trace`) never migrate.
--
-- The daemon's password: set it with `\password passerelle` in psql (the password does not
-- reach the server log), or use certificate or peer authentication in pg_hba.conf, e.g.
--   hostssl  passerelle  passerelle  10.0.0.0/24  scram-sha-256
-- Put the password in store.url (the daemon hides it in logs), or in ~passerelle/.pgpass.

\set ON_ERROR_STOP on

-- 1. Roles -----------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'passerelle_owner') THEN
        CREATE ROLE passerelle_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'passerelle') THEN
        CREATE ROLE passerelle LOGIN;
    END IF;
END
$$;

-- Set the attributes every time, so that a run after option b) above takes the login away again.
ALTER ROLE passerelle_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE passerelle LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- The daemon must never hold the owner's rights, not even through membership.
DO $$
BEGIN
    IF pg_has_role('passerelle', 'passerelle_owner', 'MEMBER') THEN
        RAISE EXCEPTION 'role passerelle is a member of passerelle_owner: REVOKE passerelle_owner FROM passerelle';
    END IF;
END
$$;

-- 2. Database --------------------------------------------------------------------------------

-- CREATE DATABASE cannot run inside a DO block; \gexec runs it only when it is missing.
-- The cluster's default encoding should be UTF8 (addresses may be UTF-8 with SMTPUTF8).
SELECT 'CREATE DATABASE passerelle OWNER passerelle_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'passerelle')
\gexec

ALTER DATABASE passerelle OWNER TO passerelle_owner;
-- Nobody else may connect or create temporary tables.
REVOKE ALL ON DATABASE passerelle FROM PUBLIC;
GRANT CONNECT ON DATABASE passerelle TO passerelle;

\connect passerelle

-- 3. Schema ----------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS passerelle AUTHORIZATION passerelle_owner;
ALTER SCHEMA passerelle OWNER TO passerelle_owner;
REVOKE ALL ON SCHEMA passerelle FROM PUBLIC;
GRANT USAGE ON SCHEMA passerelle TO passerelle;

-- PostgreSQL 14 and older let everyone create tables in `public`; 15 and newer do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The daemon's queries and the migrations name tables without a schema: find them here, for
-- every role that connects to this database (a role switched to with SET ROLE or the `role`
-- setting does not bring its own settings along, so set it on the database, not on the roles).
-- New sessions see this; it does not change sessions already open.
ALTER DATABASE passerelle SET search_path = passerelle;

-- The daemon creates nothing: earlier versions of this script granted it CREATE.
REVOKE CREATE ON SCHEMA passerelle FROM passerelle;

-- 4. Privileges ------------------------------------------------------------------------------

-- Future tables and sequences created by the owner (that is, by migrations) get the daemon's
-- grants automatically. Exceptions (append-only or read-only tables) are made in step 5.
ALTER DEFAULT PRIVILEGES FOR ROLE passerelle_owner IN SCHEMA passerelle
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO passerelle;
ALTER DEFAULT PRIVILEGES FOR ROLE passerelle_owner IN SCHEMA passerelle
    GRANT USAGE ON SEQUENCES TO passerelle;

-- Tables and sequences that already exist (a run after `passerelle migrate`).
-- USAGE on a sequence allows nextval() for BIGSERIAL ids, not setval().
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA passerelle TO passerelle;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA passerelle TO passerelle;
REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA passerelle FROM passerelle;
REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA passerelle FROM passerelle;

-- 5. Exceptions, once the tables exist ------------------------------------------------------

DO $$
DECLARE
    t record;
BEGIN
    -- The event log is append-only for the daemon.
    IF to_regclass('passerelle.events') IS NOT NULL THEN
        REVOKE UPDATE, DELETE ON passerelle.events FROM passerelle;
    END IF;
    -- The daemon reads the migration history; only the owner writes it.
    IF to_regclass('passerelle._sqlx_migrations') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE ON passerelle._sqlx_migrations FROM passerelle;
    END IF;
    -- A table owned by anyone else was not made by the owner's migration.
    FOR t IN
        SELECT c.relname, pg_get_userbyid(c.relowner) AS owner
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'passerelle' AND c.relkind IN ('r', 'p', 'S')
          AND c.relowner <> 'passerelle_owner'::regrole
    LOOP
        RAISE WARNING 'passerelle.% is owned by %, not passerelle_owner: ALTER TABLE passerelle.% OWNER TO passerelle_owner, then run this script again',
            t.relname, t.owner, t.relname;
    END LOOP;
END
$$;

-- 6. What the daemon may do now --------------------------------------------------------------

SELECT c.relname AS "table",
       has_table_privilege('passerelle', c.oid, 'SELECT')   AS "select",
       has_table_privilege('passerelle', c.oid, 'INSERT')   AS "insert",
       has_table_privilege('passerelle', c.oid, 'UPDATE')   AS "update",
       has_table_privilege('passerelle', c.oid, 'DELETE')   AS "delete",
       has_table_privilege('passerelle', c.oid, 'TRUNCATE') AS "truncate",
       pg_get_userbyid(c.relowner)                          AS "owner"
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'passerelle' AND c.relkind IN ('r', 'p')
ORDER BY c.relname;
