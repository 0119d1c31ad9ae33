-- Sync filters and profiles: the tables of migrations/0004_userdata.sql (SQLite) in PostgreSQL
-- types (userdata/filters.rs and userdata/profiles.rs run the same SQL on both).

-- Sync filters, by ID; a filter belongs to the user who uploaded it.
CREATE TABLE filters (
    filter_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id   TEXT NOT NULL,
    json      TEXT NOT NULL
);

-- Profiles of users; a user without a row has an empty profile.
CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url  TEXT
);
