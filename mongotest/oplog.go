package mongotest

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// FerretDB 1.24 writes an oplog entry for every insert, update and delete
// when the capped collection local.oplog.rs exists: an update as
// {$v: 1, $set: <the whole new document>} with o2 {_id}, a delete as {_id}.
// Drops are not logged: the proxy records them as they pass (see drops).

const (
	oplogDB   = "local"
	oplogColl = "oplog.rs"
	// defaultOplogDocs is how many entries the ring of change events keeps.
	defaultOplogDocs = 20000
)

// ensureOplog creates the oplog on the server at addr if it is missing.
func ensureOplog(ctx context.Context, addr string) error {
	c, err := mongo.Connect(mopt.Client().ApplyURI("mongodb://" + addr + "/?directConnection=true"))
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	db := c.Database(oplogDB)
	names, err := db.ListCollectionNames(ctx, bson.D{{Key: "name", Value: oplogColl}})
	if err != nil {
		return fmt.Errorf("mongotest: listing the oplog: %w", err)
	}
	if len(names) > 0 {
		return nil
	}
	// Not capped: the tailer empties it after every read (see tailer).
	if err := db.CreateCollection(ctx, oplogColl); err != nil {
		return fmt.Errorf("mongotest: creating the oplog: %w", err)
	}
	return nil
}

// entry is one oplog entry as FerretDB writes it.
type entry struct {
	Op   string         `bson:"op"`
	NS   string         `bson:"ns"`
	TS   bson.Timestamp `bson:"ts"`
	O    bson.Raw       `bson:"o"`
	O2   bson.Raw       `bson:"o2"`
	Wall time.Time      `bson:"wall"`
}

// position orders what a change stream reports: an oplog entry's
// timestamp, then kind (an entry, a drop recorded after it, the
// invalidate that follows a drop).
type position struct {
	ts   bson.Timestamp
	kind byte
}

const (
	kindEntry byte = iota
	kindDrop
	kindInvalidate
)

func (p position) after(q position) bool {
	if p.ts.T != q.ts.T {
		return p.ts.T > q.ts.T
	}
	if p.ts.I != q.ts.I {
		return p.ts.I > q.ts.I
	}
	return p.kind > q.kind
}

// token returns the resume token of p: {_data: hex}, ordered as p.
func (p position) token() bson.D {
	var b [9]byte
	binary.BigEndian.PutUint32(b[0:], p.ts.T)
	binary.BigEndian.PutUint32(b[4:], p.ts.I)
	b[8] = p.kind
	return bson.D{{Key: "_data", Value: hex.EncodeToString(b[:])}}
}

var errBadToken = errors.New("bad resume token")

// parseToken reads a resume token made by token.
func parseToken(raw bson.Raw) (position, error) {
	v, err := raw.LookupErr("_data")
	if err != nil {
		return position{}, errBadToken
	}
	s, ok := v.StringValueOK()
	if !ok {
		return position{}, errBadToken
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 9 {
		return position{}, errBadToken
	}
	return position{
		ts:   bson.Timestamp{T: binary.BigEndian.Uint32(b[0:]), I: binary.BigEndian.Uint32(b[4:])},
		kind: b[8],
	}, nil
}

// tailer moves the oplog's entries into a ring in memory, in one step
// after writes: under the proxy's serial lock (no client command in flight)
// it reads every entry of local.oplog.rs, drops the collection and creates
// it anew, so that FerretDB (which scans a collection for any filter but
// _id) never reads a large oplog. Change streams read the ring.
type tailer struct {
	backend backendClient
	serial  *sync.Mutex // the proxy's: held while the oplog is rotated
	size    int         // entries the ring keeps

	stepMu   sync.Mutex // held for a whole step
	mu       sync.Mutex
	ring     []item
	evicted  bool          // entries have left the ring: older tokens cannot resume
	base     position      // the position before the first entry ever read
	grown    chan struct{} // closed, and replaced, when items were added
	lastStep time.Time
}

// item is one entry of the ring: an oplog entry, or a drop the proxy saw.
type item struct {
	pos     position
	e       entry
	drop    *drop
	replace bool // an update entry made by a replacement
}

func newTailer(backend func() string, serial *sync.Mutex, size int64) *tailer {
	return &tailer{backend: backendClient{addr: backend}, serial: serial, size: int(size), grown: make(chan struct{})}
}

func (t *tailer) close() { t.backend.close() }

// step moves what the oplog holds into the ring. It returns the position
// of the newest item.
func (t *tailer) step(ctx context.Context) (position, error) {
	t.stepMu.Lock() // one step at a time: items are added in order
	defer t.stepMu.Unlock()
	t.serial.Lock()
	defer t.serial.Unlock()
	return t.stepHeld(ctx, false)
}

// replaced runs exchange, a write that replaces whole documents, and marks
// the oplog entries it made as replacements: the steps before and after it
// run under the same locks, so that its entries are the ones read after.
func (t *tailer) replaced(ctx context.Context, exchange func() ([]byte, error)) ([]byte, error) {
	t.stepMu.Lock()
	defer t.stepMu.Unlock()
	t.serial.Lock()
	defer t.serial.Unlock()
	t.stepHeld(ctx, false)
	reply, err := exchange()
	if err == nil {
		t.stepHeld(ctx, true)
	}
	return reply, err
}

// stepHeld is step with t.stepMu and the serial lock held; replace marks
// the updates read as replacements.
func (t *tailer) stepHeld(ctx context.Context, replace bool) (position, error) {
	c, err := t.backend.get()
	if err != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.headLocked(), err
	}
	coll := c.Database(oplogDB).Collection(oplogColl)
	cur, err := coll.Find(ctx, bson.D{}, mopt.Find().SetSort(bson.D{{Key: "ts", Value: 1}}))
	var entries []entry
	if err == nil {
		err = cur.All(ctx, &entries)
	}
	// What was read goes to the streams at once (their filters do not
	// need the serial lock), before the rotation, and even if that fails:
	// it will have left the oplog.
	t.mu.Lock()
	for _, e := range entries {
		if db, _, _ := strings.Cut(e.NS, "."); db == scratchDB || db == oplogDB {
			continue // the streams' own writes
		}
		t.addLocked(item{pos: position{ts: e.TS}, e: e, replace: replace && e.Op == "u"})
	}
	head := t.headLocked()
	t.mu.Unlock()
	if err == nil && len(entries) > 0 {
		// The filters' scratch writes, which do not take the serial lock,
		// may create the collection again between the two: it is there
		// all the same. Entries not dropped are read again, and skipped.
		if dropErr := coll.Drop(ctx); dropErr == nil {
			if testHookRotated != nil {
				testHookRotated(c)
			}
			if createErr := c.Database(oplogDB).CreateCollection(ctx, oplogColl); createErr != nil && !namespaceExists(createErr) {
				err = createErr
			}
		}
	}
	return head, err
}

// testHookRotated, when a test sets it, runs between the oplog's drop and
// its creation.
var testHookRotated func(*mongo.Client)

// namespaceExists reports whether err says the collection exists already.
func namespaceExists(err error) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(48)
}

// addDrop records a drop after everything the oplog holds now.
func (t *tailer) addDrop(ctx context.Context, d drop) {
	head, _ := t.step(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	d.pos = position{ts: head.ts, kind: kindDrop}
	t.addLocked(item{pos: d.pos, drop: &d})
}

func (t *tailer) addLocked(it item) {
	if len(t.ring) > 0 && !it.pos.after(t.ring[len(t.ring)-1].pos) {
		return // read twice (a step that failed half-way)
	}
	t.ring = append(t.ring, it)
	if len(t.ring) > t.size {
		n := len(t.ring) - t.size
		t.base = t.ring[n-1].pos
		t.ring = append(t.ring[:0:0], t.ring[n:]...)
		t.evicted = true
	}
	close(t.grown)
	t.grown = make(chan struct{})
}

// headLocked returns the position of the newest item, or base.
func (t *tailer) headLocked() position {
	if len(t.ring) == 0 {
		return t.base
	}
	return t.ring[len(t.ring)-1].pos
}

// head returns the newest position and a channel closed when items are
// added after it.
func (t *tailer) head() (position, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.headLocked(), t.grown
}

// lost reports whether items after p may have left the ring.
func (t *tailer) lost(p position) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evicted && t.base.after(p)
}

// since returns up to limit items after p, oldest first.
func (t *tailer) since(p position, limit int) []item {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := sort.Search(len(t.ring), func(i int) bool { return t.ring[i].pos.after(p) })
	out := t.ring[i:min(len(t.ring), i+limit)]
	return append([]item(nil), out...)
}

// before returns the document id of ns as the newest entry older than p
// left it, and whether that entry is still in the ring.
func (t *tailer) before(ns string, id bson.RawValue, p position) (bson.Raw, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := sort.Search(len(t.ring), func(i int) bool { return !p.after(t.ring[i].pos) })
	for i--; i >= 0; i-- {
		e := t.ring[i].e
		if t.ring[i].drop != nil || e.NS != ns {
			continue
		}
		key := e.O.Lookup("_id")
		if e.Op == "u" {
			key = e.O2.Lookup("_id")
		}
		if key.Equal(id) {
			return stateAfter(&e), true
		}
	}
	return nil, false
}
