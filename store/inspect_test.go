package store

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestInspectChangesNothing: Inspect reads the journal and the schema
// version of a database, creates no file where there is none, and leaves
// an older schema unmigrated.
func TestInspectChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenkeeper.db")
	in, err := Inspect(t.Context(), path)
	if err != nil || in.Exists {
		t.Fatalf("Inspect with no file = %+v, %v; want nothing found", in, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Inspect created %s: %v", path, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("Inspect left %d files in the directory", len(entries))
	}

	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	p := Pending{User: "alice", Sealed: []byte("sealed"), Created: time.UnixMilli(1_700_000_000_000)}
	if err := s.Apply(t.Context(), Change{Pending: &p}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	in, err = Inspect(t.Context(), path)
	if err != nil || !in.Exists || in.Version != SchemaVersion || len(in.Pending) != 1 || string(in.Pending[0].Sealed) != "sealed" {
		t.Fatalf("Inspect = %+v, %v; want the one entry at version %d", in, err, SchemaVersion)
	}

	setUserVersion(t, path, 2)
	if in, err := Inspect(t.Context(), path); err != nil || in.Version != 2 {
		t.Errorf("Inspect of a version 2 schema = %d, %v; want 2, left unmigrated", in.Version, err)
	}
	setUserVersion(t, path, SchemaVersion+1)
	var newer *SchemaTooNewError
	if _, err := Inspect(t.Context(), path); !errors.As(err, &newer) {
		t.Errorf("Inspect of a newer schema = %v, want *SchemaTooNewError", err)
	}
}

func setUserVersion(t *testing.T, path string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		t.Fatal(err)
	}
}
