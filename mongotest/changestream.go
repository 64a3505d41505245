package mongotest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// streams serves change streams on FerretDB's oplog, in the proxy: an
// aggregate whose first stage is $changeStream opens one of its cursors,
// whose getMore and killCursors it answers; everything else goes to
// FerretDB. Events follow MongoDB's documented format; the stages after
// $changeStream are evaluated by FerretDB on the events (see filter).
type streams struct {
	tail   *tailer
	done   <-chan struct{}
	faults *faults // DelayEvents

	scratch     backendClient // the filters' scratch collections (filter.go)
	scratchFile *unlogged     // their file, which they are emptied in
	checkReady  atomic.Bool   // the document new streams' stages are checked on is there (streamspec.go)

	kick   chan struct{} // 1-buffered: the tailer should step
	unread atomic.Int64  // documents written where no stream watched
	wg     sync.WaitGroup

	memo filterMemo // evaluations of pipelines shared by streams

	mu      sync.Mutex
	cursors map[int64]*stream
	nextID  int64
}

// firstStreamID is below every stream's cursor id, and above FerretDB's
// (which count up from a random 32-bit number).
const firstStreamID = 1 << 40

// drop is a dropped collection (coll "" for a dropped database), recorded
// as the proxy saw the command succeed, after the oplog's entries then.
type drop struct {
	pos      position
	db, coll string
	wall     time.Time // its wallTime
}

func newStreams(backend func() string, dataDir string, serial *sync.Mutex, ringSize int64, done <-chan struct{}) *streams {
	ss := &streams{scratch: backendClient{addr: backend}, scratchFile: newUnlogged(dataDir, scratchDB), tail: newTailer(backend, dataDir, serial, ringSize), done: done,
		kick: make(chan struct{}, 1), cursors: map[int64]*stream{}, nextID: firstStreamID}
	ss.wg.Add(1)
	go ss.tailLoop()
	return ss
}

// tailLoop steps the tailer after writes, at most every couple of
// milliseconds, until the proxy closes.
func (ss *streams) tailLoop() {
	defer ss.wg.Done()
	for {
		select {
		case <-ss.done:
			return
		case <-ss.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := ss.tail.step(ctx)
		cancel()
		if err != nil { // the backend restarts, or is gone: try again soon
			select {
			case ss.kick <- struct{}{}:
			default:
			}
			select {
			case <-ss.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (ss *streams) close() {
	ss.wg.Wait()
	ss.tail.close()
	ss.scratch.close()
	ss.scratchFile.close()
}

// handle answers req if it belongs to change streams, and reports whether
// it did.
func (ss *streams) handle(req []byte, body bson.Raw, name string) ([]byte, bool) {
	switch name {
	case "aggregate":
		spec, ok := changeStreamSpec(body)
		if !ok {
			return nil, false
		}
		return reply(req, ss.open(body, spec)), true
	case "getMore":
		id, _ := body.Lookup("getMore").AsInt64OK()
		ss.mu.Lock()
		st := ss.cursors[id]
		ss.mu.Unlock()
		if st == nil && id >= firstStreamID {
			// A stream's cursor that is gone: killed, or ended.
			return reply(req, commandError(43, "CursorNotFound", fmt.Sprintf("cursor id %d not found", id))), true
		}
		if st == nil {
			return nil, false // one of FerretDB's
		}
		maxWait := time.Second
		if ms, ok := body.Lookup("maxTimeMS").AsInt64OK(); ok && ms > 0 {
			maxWait = time.Duration(ms) * time.Millisecond
		}
		return reply(req, ss.getMore(st, maxWait)), true
	case "killCursors":
		arr, _ := body.Lookup("cursors").ArrayOK()
		vals, _ := arr.Values()
		killed, notFound := bson.A{}, bson.A{}
		ours := false
		ss.mu.Lock()
		for _, v := range vals {
			id, _ := v.AsInt64OK()
			if id >= firstStreamID {
				ours = true
			}
			if ss.cursors[id] != nil {
				delete(ss.cursors, id)
				killed = append(killed, id)
			} else {
				notFound = append(notFound, id)
			}
		}
		ss.mu.Unlock()
		if !ours {
			return nil, false
		}
		return reply(req, bson.D{{Key: "cursorsKilled", Value: killed}, {Key: "cursorsNotFound", Value: notFound},
			{Key: "cursorsAlive", Value: bson.A{}}, {Key: "cursorsUnknown", Value: bson.A{}}, {Key: "ok", Value: 1.0}}), true
	}
	return nil, false
}

// changeStreamSpec returns the $changeStream stage's options if body is an
// aggregate that starts with one.
func changeStreamSpec(body bson.Raw) (bson.Raw, bool) {
	pipe, ok := body.Lookup("pipeline").ArrayOK()
	if !ok {
		return nil, false
	}
	first, err := pipe.IndexErr(0)
	if err != nil {
		return nil, false
	}
	stage, ok := first.DocumentOK()
	if !ok {
		return nil, false
	}
	spec, ok := stage.Lookup("$changeStream").DocumentOK()
	return spec, ok
}

// isChangeStream reports whether body is an aggregate that opens a change
// stream.
func isChangeStream(body bson.Raw) bool {
	if body == nil {
		return false
	}
	_, ok := changeStreamSpec(body)
	return ok
}

// replaced runs a write that replaces whole documents (see
// tailer.replaced).
func (ss *streams) replaced(exchange func() ([]byte, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ss.tail.replaced(ctx, exchange)
}

// wrote is told of every command the proxy forwarded: writes have the
// tailer step, and drops are recorded (FerretDB does not log them).
func (ss *streams) wrote(body bson.Raw, name string, answer []byte) {
	switch name {
	case "insert", "update", "delete", "findAndModify", "drop", "dropDatabase":
	default:
		return
	}
	if db, _ := body.Lookup("$db").StringValueOK(); db == scratchDB || db == oplogDB {
		return // the streams' own filtering
	}
	if name == "drop" || name == "dropDatabase" {
		if res, _ := command(answer); res != nil {
			if ok, _ := res.Lookup("ok").AsFloat64OK(); ok == 1 {
				db, _ := body.Lookup("$db").StringValueOK()
				d := drop{db: db}
				if name == "drop" {
					d.coll, _ = body.Lookup("drop").StringValueOK()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ss.tail.addDrop(ctx, d)
				cancel()
				return
			}
		}
	}
	// A write no open stream watches costs no step of its own: its entry
	// waits in the oplog for the next step (a watched write, a stream's
	// opening, or lazySteps more documents written unwatched).
	db, _ := body.Lookup("$db").StringValueOK()
	coll, _ := body.Lookup(name).StringValueOK()
	if !ss.watched(db + "." + coll) {
		// Counted by the documents the write reports (a bulk write logs
		// an entry for each), so that a step never reads many.
		k := int64(1)
		if res, _ := command(answer); res != nil {
			if n, ok := res.Lookup("n").AsInt64OK(); ok && n > 1 {
				k = n
			}
		}
		if after := ss.unread.Add(k); after/lazySteps == (after-k)/lazySteps {
			return
		}
	}
	select {
	case ss.kick <- struct{}{}:
	default:
	}
}

// watched reports whether an open stream watches the namespace ns.
func (ss *streams) watched(ns string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, st := range ss.cursors {
		if st.watches(ns) {
			return true
		}
	}
	return false
}

// lazySteps is about how many entries of writes no stream watches the
// oplog holds before the tailer moves them into the ring.
const lazySteps = 256

// open starts a stream for the aggregate body with the $changeStream
// options spec, and returns the reply with an empty first batch.
func (ss *streams) open(body bson.Raw, spec bson.Raw) bson.D {
	db, _ := body.Lookup("$db").StringValueOK()
	st := &stream{db: db, fullDocument: "default"}
	if coll, ok := body.Lookup("aggregate").StringValueOK(); ok {
		st.coll = coll
	}
	if all, _ := spec.Lookup("allChangesForCluster").BooleanOK(); all {
		st.db = ""
	}
	if fd, ok := spec.Lookup("fullDocument").StringValueOK(); ok {
		st.fullDocument = fd
	}
	pipe, _ := body.Lookup("pipeline").Array().Values()
	for _, v := range pipe[1:] {
		stage, ok := v.DocumentOK()
		if !ok {
			return commandError(14, "TypeMismatch", "Each element of the 'pipeline' array must be an object")
		}
		st.pipeline = append(st.pipeline, stage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e := ss.checkStream(ctx, spec, st.pipeline); e != nil {
		return e
	}
	// What was written before the aggregate is not the stream's.
	head, err := ss.tail.step(ctx)
	if err != nil {
		return commandError(6, "HostUnreachable", err.Error(), "ResumableChangeStreamError")
	}
	var tok bson.Raw
	resumeAfter := false
	if v, ok := spec.Lookup("resumeAfter").DocumentOK(); ok {
		tok, resumeAfter = v, true
	} else if v, ok := spec.Lookup("startAfter").DocumentOK(); ok {
		tok = v
	}
	switch {
	case tok != nil:
		p, err := parseToken(tok)
		if err != nil {
			return commandError(260, "InvalidResumeToken", "mongotest: not a resume token of this server")
		}
		if p.kind == kindInvalidate && resumeAfter {
			return commandError(260, "InvalidResumeToken", "cannot resume after an invalidate; use startAfter")
		}
		if ss.tail.lost(p) {
			return commandError(286, "ChangeStreamHistoryLost",
				"Resume of change stream was not possible, as the resume point may no longer be in the oplog.")
		}
		st.pos = p
	default:
		if at, _, ok := spec.Lookup("startAtOperationTime").TimestampOK(); ok {
			st.pos = position{ts: bson.Timestamp{T: at}, kind: kindEntry}
			if at > 0 {
				st.pos.ts = bson.Timestamp{T: at - 1, I: ^uint32(0)}
			}
		} else {
			st.pos = head
		}
	}
	ss.mu.Lock()
	ss.nextID++
	st.id = ss.nextID
	ss.cursors[st.id] = st
	ss.mu.Unlock()
	// A write between the step above and this cursor's registration saw
	// no stream, and had no step: step now.
	select {
	case ss.kick <- struct{}{}:
	default:
	}
	return cursorReply(st, "firstBatch", nil)
}

func cursorReply(st *stream, batch string, events []bson.Raw) bson.D {
	if events == nil {
		events = []bson.Raw{}
	}
	id := st.id
	if st.invalidated {
		id = 0
	}
	return bson.D{{Key: "cursor", Value: bson.D{
		{Key: batch, Value: events},
		{Key: "postBatchResumeToken", Value: st.pos.token()},
		{Key: "id", Value: id},
		{Key: "ns", Value: st.cursorNS()},
	}}, {Key: "ok", Value: 1.0}}
}

// getMore waits up to maxWait for events of st, without holding the
// proxy's serial lock: other clients go on meanwhile.
func (ss *streams) getMore(st *stream, maxWait time.Duration) bson.D {
	st.mu.Lock() // one getMore of a cursor at a time
	defer st.mu.Unlock()
	deadline := time.NewTimer(maxWait)
	defer deadline.Stop()
	for {
		_, grown := ss.tail.head()
		if ss.tail.lost(st.pos) {
			return commandError(286, "ChangeStreamHistoryLost",
				"Resume of change stream was not possible, as the resume point may no longer be in the oplog.")
		}
		items, due := ripe(ss.tail.since(st.pos, 500), ss.faults.delay(), time.Now())
		if events := st.next(items); len(events) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			raws, err := ss.filter(ctx, st, events)
			cancel()
			if err != nil {
				return commandError(6, "HostUnreachable", err.Error(), "ResumableChangeStreamError")
			}
			if len(raws) > 0 {
				return ss.batch(st, raws)
			}
		}
		if st.invalidated {
			return ss.batch(st, nil)
		}
		var later <-chan time.Time
		if !due.IsZero() {
			t := time.NewTimer(time.Until(due))
			defer t.Stop()
			later = t.C
		}
		select {
		case <-later:
		case <-grown:
		case <-deadline.C:
			return cursorReply(st, "nextBatch", nil)
		case <-ss.done:
			return commandError(11600, "InterruptedAtShutdown", "mongotest is shutting down", "ResumableChangeStreamError")
		}
	}
}

// ripe returns the items that may reach streams at now, when events come
// delay after their write: the oldest ones, up to the first that must wait
// longer. due is when that one may go (zero when none waits).
func ripe(items []item, delay time.Duration, now time.Time) (out []item, due time.Time) {
	if delay <= 0 {
		return items, time.Time{}
	}
	for i, it := range items {
		if at := it.at.Add(delay); at.After(now) {
			return items[:i], at
		}
	}
	return items, time.Time{}
}

// wake has every getMore look at the ring again (the event delay changed).
func (ss *streams) wake() { ss.tail.poke() }

// batch replies with events, and forgets an invalidated cursor.
func (ss *streams) batch(st *stream, events []bson.Raw) bson.D {
	if st.invalidated {
		ss.mu.Lock()
		delete(ss.cursors, st.id)
		ss.mu.Unlock()
	}
	return cursorReply(st, "nextBatch", events)
}

// stream is one change-stream cursor.
type stream struct {
	id           int64
	db, coll     string // db "" for the whole cluster, coll "" for a whole database
	pipeline     []bson.Raw
	fullDocument string

	mu          sync.Mutex
	pos         position
	invalidated bool
}

func (st *stream) cursorNS() string {
	switch {
	case st.db == "":
		return "admin.$cmd.aggregate"
	case st.coll == "":
		return st.db + ".$cmd.aggregate"
	}
	return st.db + "." + st.coll
}

// watches reports whether st reports changes of the namespace ns.
func (st *stream) watches(ns string) bool {
	db, coll, _ := strings.Cut(ns, ".")
	if db == oplogDB || db == scratchDB || db == "admin" || db == "config" || strings.HasPrefix(coll, "system.") {
		return false
	}
	return (st.db == "" || st.db == db) && (st.coll == "" || st.coll == coll)
}
