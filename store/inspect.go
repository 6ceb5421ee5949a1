package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Inspection is what Inspect found in a database.
type Inspection struct {
	// Exists is false when there is no database file yet; Open creates it
	// (Inspect then checked that its directory is writable).
	Exists bool
	// Version is the schema version (PRAGMA user_version); Open migrates a
	// lower one to SchemaVersion.
	Version int
	// Pending are the journal entries, sealed.
	Pending []Pending
}

// SchemaTooNewError is a database written by a newer tokenkeeper, whose
// schema this one does not know and Open refuses.
type SchemaTooNewError struct{ Version, Known int }

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("schema version %d is newer than this tokenkeeper knows (%d)", e.Version, e.Known)
}

// WriteError is a database (or its directory) that tokenkeeper cannot write.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "not writable: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Inspect looks at the database at path without changing anything that
// lasts: it neither creates, migrates nor narrows the file. It proves the
// database writable with a write that it rolls back (or, when there is no
// file yet, its directory writable with a file it removes) and returns the
// schema version and the sealed journal entries.
func Inspect(ctx context.Context, path string) (Inspection, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return Inspection{}, dirWritable(filepath.Dir(path))
	} else if err != nil {
		return Inspection{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	db, err := sql.Open("sqlite3", "file:"+esc+"?mode=rw&_busy_timeout=5000")
	if err != nil {
		return Inspection{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	in := Inspection{Exists: true}
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&in.Version); err != nil {
		return in, fmt.Errorf("inspect %s: read schema version: %w", path, err)
	}
	if in.Version > SchemaVersion {
		return in, &SchemaTooNewError{Version: in.Version, Known: SchemaVersion}
	}
	if err := writeRolledBack(ctx, db); err != nil {
		return in, fmt.Errorf("inspect %s: %w", path, err)
	}
	if in.Version == 0 {
		return in, nil // no journal table before the first migration
	}
	in.Pending, err = journal(ctx, db)
	return in, err
}

// dirWritable checks that a file can be created in dir, and removes it.
func dirWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".tokenkeeper-probe-*")
	if err != nil {
		return &WriteError{Err: err}
	}
	f.Close()
	return os.Remove(f.Name())
}

// writeRolledBack creates a table in a transaction and rolls it back: the
// database file, its journal and the locks they need are all writable.
func writeRolledBack(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return &WriteError{Err: err}
	}
	defer tx.Rollback() //nolint:errcheck // the point is not to commit
	if _, err := tx.ExecContext(ctx, `CREATE TABLE tokenkeeper_write_probe (x INTEGER)`); err != nil {
		return &WriteError{Err: err}
	}
	return nil
}

// journal returns every journal entry, sealed.
func journal(ctx context.Context, db *sql.DB) ([]Pending, error) {
	rows, err := db.QueryContext(ctx, `SELECT name, created, spent, sealed FROM journal ORDER BY created`)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		var created int64
		var spent []byte
		if err := rows.Scan(&p.User, &created, &spent, &p.Sealed); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		p.Created = fromMillis(created)
		copy(p.Spent[:], spent)
		out = append(out, p)
	}
	return out, rows.Err()
}
