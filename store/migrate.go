package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations[i] takes the schema from version i to version i+1. Version 1 is
// the schema of databases written before the schema had a version, so it
// creates only what is missing. Append new steps; never edit old ones.
var migrations = []string{
	// 1: schedule, audit, journal, sessions, seen logout token ids.
	`CREATE TABLE IF NOT EXISTS users (
		name           TEXT PRIMARY KEY,
		due            INTEGER NOT NULL,
		access_expiry  INTEGER NOT NULL DEFAULT 0,
		refresh_expiry INTEGER NOT NULL DEFAULT 0,
		failures       INTEGER NOT NULL DEFAULT 0,
		status         TEXT NOT NULL,
		reason         TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE IF NOT EXISTS logouts (
		id      INTEGER PRIMARY KEY AUTOINCREMENT,
		name    TEXT NOT NULL,
		at      INTEGER NOT NULL,
		reason  TEXT NOT NULL,
		actions TEXT NOT NULL
	);
	CREATE TABLE IF NOT EXISTS journal (
		name    TEXT PRIMARY KEY,
		created INTEGER NOT NULL,
		spent   BLOB NOT NULL,
		sealed  BLOB NOT NULL
	);
	CREATE TABLE IF NOT EXISTS sessions (
		sid     TEXT PRIMARY KEY,
		sub     TEXT NOT NULL,
		name    TEXT NOT NULL,
		updated INTEGER NOT NULL
	);
	CREATE INDEX IF NOT EXISTS sessions_sub ON sessions (sub);
	CREATE TABLE IF NOT EXISTS seen_jti (
		jti     TEXT PRIMARY KEY,
		expires INTEGER NOT NULL
	);`,
	// 2: the refresh token an ended-session decision was made on and
	// whether the token's expiry predicted the end; what the hub's user list
	// last said (kept fresh, last activity); indexes for retention.
	`ALTER TABLE users ADD COLUMN ended_on BLOB;
	ALTER TABLE users ADD COLUMN end_expected INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE users ADD COLUMN kept INTEGER NOT NULL DEFAULT 1;
	ALTER TABLE users ADD COLUMN activity TEXT NOT NULL DEFAULT '';
	CREATE INDEX IF NOT EXISTS logouts_at ON logouts (at);
	CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated);
	CREATE INDEX IF NOT EXISTS seen_jti_expires ON seen_jti (expires);`,
	// 3: intents written before each grant (whose outcome is unknown while
	// they remain), the mass-failure guard's state, and fences: logouts
	// decided (a back-channel logout) and not yet carried out.
	`CREATE TABLE intents (
		name    TEXT PRIMARY KEY,
		spent   BLOB NOT NULL,
		spends  INTEGER NOT NULL,
		created INTEGER NOT NULL
	);
	CREATE TABLE guard (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		tripped INTEGER NOT NULL,
		since   INTEGER NOT NULL
	);
	CREATE TABLE fences (
		name    TEXT NOT NULL,
		sid     TEXT NOT NULL,
		sub     TEXT NOT NULL,
		reason  TEXT NOT NULL,
		created INTEGER NOT NULL,
		PRIMARY KEY (name, sid)
	);`,
	// 4: when the access token the hub holds was issued (its iat): the
	// last refresh, as the service page shows it.
	`ALTER TABLE users ADD COLUMN issued INTEGER NOT NULL DEFAULT 0;`,
}

// SchemaVersion is the schema version Open migrates to.
var SchemaVersion = len(migrations)

// migrate applies every step the database has not had, each in its own
// transaction together with the new version number. A database newer than
// this binary is refused rather than guessed at.
func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this tokenkeeper knows (%d): use a newer tokenkeeper", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		if err := step(ctx, db, v); err != nil {
			return err
		}
	}
	return nil
}

func step(ctx context.Context, db *sql.DB, v int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate to version %d: %w", v+1, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return fmt.Errorf("migrate to version %d: %w", v+1, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
		return fmt.Errorf("migrate to version %d: %w", v+1, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate to version %d: %w", v+1, err)
	}
	return nil
}
