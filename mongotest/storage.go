package mongotest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"

	_ "modernc.org/sqlite" // the driver FerretDB itself uses
)

// FerretDB 1.24's SQLite backend keeps each database in the file
// <data folder>/<database>.sqlite, each collection in a table named in that
// file's _ferretdb_collections, a document as JSON in the column
// _ferretdb_sjson, an ObjectID there as a JSON string of its hex digits.
const (
	sqliteExt  = ".sqlite"
	sqliteMeta = "_ferretdb_collections"
	// sqliteSync is the durability FerretDB's files are written with, by
	// FerretDB and here: a process's crash loses nothing, a power cut may
	// lose the last transactions, which a test server can afford (it
	// halves a write).
	sqliteSync = "_pragma=synchronous(normal)"
)

// unlogged deletes documents straight from one of FerretDB's SQLite files,
// past FerretDB, so that no oplog entry records the deletion: the tailer
// empties the oplog so (a deletion of oplog entries through FerretDB would
// log as many entries again, without end), and the filters their scratch
// collections.
type unlogged struct {
	path string

	mu     sync.Mutex
	db     *sql.DB
	tables map[string]string    // collection -> table, looked up at first use and after a failure
	stmts  map[string]*sql.Stmt // prepared once
}

func newUnlogged(dataDir, db string) *unlogged {
	return &unlogged{path: filepath.Join(dataDir, db+sqliteExt), tables: map[string]string{}, stmts: map[string]*sql.Stmt{}}
}

// delete removes the documents of coll whose _id is one of ids.
func (u *unlogged) delete(ctx context.Context, coll string, ids []bson.ObjectID) error {
	if len(ids) == 0 {
		return nil
	}
	hex := make([]string, len(ids))
	for i, id := range ids {
		hex[i] = id.Hex()
	}
	list, err := json.Marshal(hex)
	if err != nil {
		return err
	}
	// One statement whatever the number of ids, prepared once. (It scans
	// the table, which holds only the entries not yet read and deleted.)
	return u.exec(ctx, coll, "DELETE FROM %q WHERE _ferretdb_sjson->>'$._id' IN (SELECT value FROM json_each(?))", string(list))
}

// deleteAll removes every document of coll.
func (u *unlogged) deleteAll(ctx context.Context, coll string) error {
	return u.exec(ctx, coll, "DELETE FROM %q")
}

// exec runs the statement q, whose %q is coll's table, with args.
func (u *unlogged) exec(ctx context.Context, coll, q string, args ...any) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	table, err := u.tableLocked(ctx, coll)
	if err != nil {
		return err
	}
	q = fmt.Sprintf(q, table)
	stmt := u.stmts[q]
	if stmt == nil {
		if stmt, err = u.db.PrepareContext(ctx, q); err != nil {
			delete(u.tables, coll) // the collection may have been dropped and made anew
			return fmt.Errorf("mongotest: deleting from %s: %w", coll, err)
		}
		u.stmts[q] = stmt
	}
	if _, err := stmt.ExecContext(ctx, args...); err != nil {
		delete(u.tables, coll)
		delete(u.stmts, q)
		stmt.Close()
		return fmt.Errorf("mongotest: deleting from %s: %w", coll, err)
	}
	return nil
}

// tableLocked opens the file, if not done yet, and returns coll's table.
func (u *unlogged) tableLocked(ctx context.Context, coll string) (string, error) {
	if u.db == nil {
		// FerretDB's own settings: waits for its writers rather than
		// failing, in its journal mode.
		db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(u.path)+
			"?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)&"+sqliteSync)
		if err != nil {
			return "", fmt.Errorf("mongotest: %w", err)
		}
		db.SetMaxOpenConns(1)
		u.db = db
	}
	if table := u.tables[coll]; table != "" {
		return table, nil
	}
	var table string
	err := u.db.QueryRowContext(ctx, fmt.Sprintf("SELECT table_name FROM %q WHERE name = ?", sqliteMeta), coll).Scan(&table)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("mongotest: no table for %s in %s", coll, u.path)
	}
	if err != nil {
		return "", fmt.Errorf("mongotest: looking %s up in %s: %w", coll, u.path, err)
	}
	u.tables[coll] = table
	return table, nil
}

func (u *unlogged) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for q, stmt := range u.stmts {
		stmt.Close()
		delete(u.stmts, q)
	}
	if u.db != nil {
		u.db.Close()
		u.db = nil
	}
}
