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
	ID   bson.ObjectID  `bson:"_id"`
	Op   string         `bson:"op"`
	NS   string         `bson:"ns"`
	TS   bson.Timestamp `bson:"ts"`
	O    bson.Raw       `bson:"o"`
	O2   bson.Raw       `bson:"o2"`
	Wall time.Time      `bson:"wall"`
}

// position orders what a change stream reports: an oplog entry's
// timestamp, then a sequence number (for what is recorded after an entry
// at its timestamp: drops, one after another, and entries logged out of
// their timestamps' order), then kind (an entry, a drop, the invalidate
// that follows a drop).
type position struct {
	ts   bson.Timestamp
	seq  uint32
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
	if p.seq != q.seq {
		return p.seq > q.seq
	}
	return p.kind > q.kind
}

// next returns the position of kind to record after head: at its
// timestamp, with the next sequence number if need be.
func (head position) next(kind byte) position {
	p := position{ts: head.ts, seq: head.seq, kind: kind}
	if !p.after(head) {
		p.seq++
	}
	return p
}

// tokenLen is the length of a resume token's bytes: ts, seq, kind.
const tokenLen = 13

// token returns the resume token of p: {_data: hex}, ordered as p.
func (p position) token() bson.D {
	var b [tokenLen]byte
	binary.BigEndian.PutUint32(b[0:], p.ts.T)
	binary.BigEndian.PutUint32(b[4:], p.ts.I)
	binary.BigEndian.PutUint32(b[8:], p.seq)
	b[12] = p.kind
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
	if err != nil || len(b) != tokenLen {
		return position{}, errBadToken
	}
	return position{
		ts:   bson.Timestamp{T: binary.BigEndian.Uint32(b[0:]), I: binary.BigEndian.Uint32(b[4:])},
		seq:  binary.BigEndian.Uint32(b[8:]),
		kind: b[12],
	}, nil
}

// tailer moves the oplog's entries into a ring in memory, where change
// streams read them. A step reads the whole oplog through FerretDB, then
// deletes the entries it read past FerretDB (see unlogged), so that the
// next read, which FerretDB makes by scanning the collection, finds only
// the entries written since. No step needs the proxy's serial lock: a
// client's write logs its entry before its reply, and the proxy runs one
// client command at a time, so the clients' entries appear in the order of
// their timestamps, and an entry logged after a read stays for the next.
type tailer struct {
	backend backendClient
	oplog   *unlogged
	serial  *sync.Mutex // the proxy's: held around a replacement's write
	size    int         // entries the ring keeps

	stepMu  sync.Mutex // held for a whole step
	mu      sync.Mutex
	ring    []item
	evicted bool          // entries have left the ring: older tokens cannot resume
	base    position      // the position before the first entry ever read
	grown   chan struct{} // closed, and replaced, when items were added

	undeleted map[bson.ObjectID]bool // with stepMu: entries read whose deletion failed (read again, they are skipped)

	// clockOffset is the primary's clock's offset from the host's: events'
	// wallTime is on it (member.go). Nil: none.
	clockOffset func() time.Duration

	// afterRead, when a test sets it (with stepMu held), runs between a
	// read of the oplog that found entries and their deletion.
	afterRead func(*mongo.Client)
}

// item is one entry of the ring: an oplog entry, or a drop the proxy saw.
type item struct {
	pos     position
	e       entry
	drop    *drop
	replace bool      // an update entry made by a replacement
	desc    bson.D    // an update's updateDescription
	at      time.Time // when it entered the ring (DelayEvents counts from it)
	wall    time.Time // its wallTime: the write's, on the member's clock
}

func newTailer(backend func() string, dataDir string, serial *sync.Mutex, size int64) *tailer {
	return &tailer{backend: backendClient{addr: backend}, oplog: newUnlogged(dataDir, oplogDB),
		serial: serial, size: int(size), grown: make(chan struct{}), undeleted: map[bson.ObjectID]bool{}}
}

func (t *tailer) close() {
	t.backend.close()
	t.oplog.close()
}

// step moves the oplog's entries into the ring. It returns the position of
// the newest item.
func (t *tailer) step(ctx context.Context) (position, error) {
	t.stepMu.Lock() // one step at a time: items are added in order
	defer t.stepMu.Unlock()
	return t.read(ctx, false)
}

// replaced runs exchange, a write that replaces whole documents, and marks
// the oplog entries it made as replacements: the reads before and after it
// run under the serial lock, so that its entries are the ones read after.
func (t *tailer) replaced(ctx context.Context, exchange func() ([]byte, error)) ([]byte, error) {
	t.stepMu.Lock()
	defer t.stepMu.Unlock()
	t.serial.Lock()
	defer t.serial.Unlock()
	t.read(ctx, false)
	reply, err := exchange()
	if err == nil {
		t.read(ctx, true)
	}
	return reply, err
}

// read moves the oplog's entries into the ring and deletes them from the
// oplog, with t.stepMu held; replace marks the updates read as
// replacements. It returns the position of the newest item.
func (t *tailer) read(ctx context.Context, replace bool) (position, error) {
	var entries []entry
	c, err := t.backend.get()
	if err == nil {
		var cur *mongo.Cursor
		cur, err = c.Database(oplogDB).Collection(oplogColl).Find(ctx, bson.D{},
			mopt.Find().SetSort(bson.D{{Key: "ts", Value: 1}}))
		if err == nil {
			err = cur.All(ctx, &entries)
		}
	}
	// What was read goes to the streams at once, even if the deletion
	// fails: entries not deleted are read again, and skipped.
	t.mu.Lock()
	ids := make([]bson.ObjectID, 0, len(entries))
	for _, e := range entries {
		ids = append(ids, e.ID)
		if t.undeleted[e.ID] {
			continue // read before
		}
		if db, _, _ := strings.Cut(e.NS, "."); db == scratchDB || db == oplogDB {
			continue // the streams' own writes
		}
		it := item{pos: position{ts: e.TS}, e: e, replace: replace && e.Op == "u"}
		if head := t.headLocked(); !it.pos.after(head) {
			// Logged after entries with later timestamps (a write whose
			// connection was cut while FerretDB ran it, one sent to
			// FerretDB directly): it comes after them.
			it.pos = head.next(kindEntry)
		}
		if e.Op == "u" && !it.replace {
			// Once for every stream: from the document as the ring last
			// had it.
			post, _ := e.O.Lookup("$set").DocumentOK()
			pre, _ := t.beforeLocked(e.NS, e.O2.Lookup("_id"))
			it.desc = describe(pre, post)
		}
		t.addLocked(it)
	}
	head := t.headLocked()
	t.mu.Unlock()
	if err == nil && t.afterRead != nil && len(ids) > 0 {
		t.afterRead(c)
	}
	if err == nil && t.oplog.delete(ctx, oplogColl, ids) == nil {
		clear(t.undeleted)
		return head, nil
	}
	for _, id := range ids {
		t.undeleted[id] = true
	}
	return head, err // a failed deletion is tried again at the next read
}

// addDrop records a drop after everything the oplog holds now.
func (t *tailer) addDrop(ctx context.Context, d drop) {
	// One step: a step between the read and the record would add entries
	// after the drop's position, and the drop would be skipped.
	t.stepMu.Lock()
	defer t.stepMu.Unlock()
	t.read(ctx, false)
	t.mu.Lock()
	defer t.mu.Unlock()
	d.pos = t.headLocked().next(kindDrop) // after a drop just before, too
	t.addLocked(item{pos: d.pos, drop: &d})
}

func (t *tailer) addLocked(it item) {
	it.at = time.Now()
	// On the clock of the member that was primary then (Failover).
	var shift time.Duration
	if t.clockOffset != nil {
		shift = t.clockOffset()
	}
	if it.wall = it.e.Wall.Add(shift); it.drop != nil {
		it.wall = it.at.Add(shift)
		it.drop.wall = it.wall
	}
	t.ring = append(t.ring, it)
	// Trimmed by a quarter at a time: a copy of the ring for every item
	// would cost a write megabytes.
	if len(t.ring) > t.size+t.size/4 {
		n := len(t.ring) - t.size
		t.base = t.ring[n-1].pos
		t.ring = append(t.ring[:0:0], t.ring[n:]...)
		t.evicted = true
	}
	close(t.grown)
	t.grown = make(chan struct{})
}

// poke wakes everyone waiting for items, as if some had come.
func (t *tailer) poke() {
	t.mu.Lock()
	defer t.mu.Unlock()
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

// beforeLocked returns the document id of ns as the newest entry of the
// ring left it, with t.mu held, and whether such an entry is there.
func (t *tailer) beforeLocked(ns string, id bson.RawValue) (bson.Raw, bool) {
	db, coll, _ := strings.Cut(ns, ".")
	for i := len(t.ring) - 1; i >= 0; i-- {
		if d := t.ring[i].drop; d != nil {
			if d.db == db && (d.coll == "" || d.coll == coll) {
				return nil, false // the document was dropped with its collection
			}
			continue
		}
		e := t.ring[i].e
		if e.NS != ns {
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
