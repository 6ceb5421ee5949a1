package doctor

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenkeeper/tokenkeeper/store"
)

const (
	nameDatabase = "database"
	nameStateKey = "state key"
)

// checkDatabase checks that the database is writable without changing it,
// then that the state keys open every journal entry in it.
func checkDatabase(ctx context.Context, d Deps) []Result {
	path := d.Config.Database
	in, err := d.Inspect(ctx, path)
	if err != nil {
		return []Result{databaseFailed(path, err), skipped(nameStateKey, "the database could not be read")}
	}
	db := ok(nameDatabase, fmt.Sprintf("%s is writable (a write rolled back); schema version %d", path, in.Version))
	if !in.Exists {
		db = ok(nameDatabase, "no file at "+path+" yet; tokenkeeper creates it at start, and its directory is writable")
	}
	return []Result{db, checkJournal(in.Pending, d)}
}

func databaseFailed(path string, err error) Result {
	var newer *store.SchemaTooNewError
	switch {
	case errors.As(err, &newer):
		return fail(nameDatabase, path+": "+describe(err),
			"run the tokenkeeper release that wrote it, or a newer one; going back needs the backup taken before the upgrade")
	case errors.As(err, new(*store.WriteError)):
		return fail(nameDatabase, path+" is "+describe(err),
			"tokenkeeper's user must be able to write "+path+" and create "+path+"-wal and "+path+"-shm beside it: "+
				"check the owner, the mode, and that the volume is not read-only")
	}
	return fail(nameDatabase, describe(err), "check that database (TOKENKEEPER_DATABASE) names tokenkeeper's SQLite file")
}

// checkJournal opens every journal entry with the configured state keys.
func checkJournal(entries []store.Pending, d Deps) Result {
	if len(entries) == 0 {
		return ok(nameStateKey, "the journal holds no entry to open; the key is well formed")
	}
	failed := 0
	for _, p := range entries {
		if d.OpenJournal(p) != nil {
			failed++
		}
	}
	if failed > 0 {
		return fail(nameStateKey, fmt.Sprintf("%d of %d journal entries open with none of the configured state keys", failed, len(entries)),
			"the state key changed: put back the key they were sealed with after the new one "+
				"(TOKENKEEPER_STATE_KEY=NEW,OLD), and tokenkeeper replays them; without it their users must log in again")
	}
	return ok(nameStateKey, fmt.Sprintf("the configured state keys open all %d journal entries", len(entries)))
}
