-- Run once, when the PostgreSQL volume is created: the registry's database beside the
-- Iceberg catalog's (POSTGRES_DB=iceberg).
CREATE DATABASE registry OWNER k2;
