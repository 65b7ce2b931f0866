-- Run once by the postgres image on an empty data directory: one database per store, all owned by
-- POSTGRES_USER (musicops); the application URLs (docs/deploy.md) live in Secrets.
CREATE DATABASE provenance;
CREATE DATABASE serving;
CREATE DATABASE mlflow;
CREATE DATABASE mos;
