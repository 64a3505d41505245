package mongotest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// filter has FerretDB evaluate st's pipeline stages on events, in a
// scratch collection, so that they match with MongoDB's semantics.
//
// Streams that run the same pipeline over the same events (every Locker of
// a collection opens the same one) share one evaluation: the first to ask
// runs it, the others wait for its result. Without that, each event would
// cost three commands per open stream on the serialised backend.
func (ss *streams) filter(ctx context.Context, st *stream, events []bson.D) ([]bson.Raw, error) {
	raws := make([]bson.Raw, 0, len(events))
	for _, ev := range events {
		raw, err := bson.Marshal(ev)
		if err != nil {
			return nil, err
		}
		raws = append(raws, raw)
	}
	if len(st.pipeline) == 0 {
		return raws, nil
	}
	key := memoKey(st.pipeline, raws)
	c, first := ss.memo.start(key)
	if first {
		c.out, c.err = ss.evaluate(ctx, st, events)
		ss.memo.finish(key, c)
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c.out, c.err
}

// evaluate runs st's pipeline over events in st's scratch collection,
// which it empties after (past FerretDB: see unlogged). (Keeping the
// events of earlier batches and matching on a batch mark costs more:
// FerretDB scans them all.)
func (ss *streams) evaluate(ctx context.Context, st *stream, events []bson.D) ([]bson.Raw, error) {
	// Directly to FerretDB: the scratch collections are mongotest's own,
	// so their commands need not queue behind the clients' on the proxy's
	// serial lock (SQLite keeps each database in its own file).
	client, err := ss.scratch.get()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprint("cursor_", st.id)
	scratch := client.Database(scratchDB).Collection(name)
	docs := make([]any, len(events))
	for i, ev := range events {
		docs[i] = escapePaths(ev)
	}
	if _, err := scratch.InsertMany(ctx, docs); err != nil {
		return nil, err
	}
	out, err := aggregate(ctx, scratch, st.pipeline)
	for i, raw := range out {
		if out[i], err = unescapePaths(raw); err != nil {
			break
		}
	}
	if err := ss.scratchFile.deleteAll(ctx, name); err != nil {
		return nil, err
	}
	return out, err
}

// aggregate returns what pipeline makes of the events in scratch, in the
// order of their resume tokens.
func aggregate(ctx context.Context, scratch *mongo.Collection, pipeline []bson.Raw) ([]bson.Raw, error) {
	pipe := append(bson.A{bson.D{{Key: "$sort", Value: bson.D{{Key: "_id._data", Value: 1}}}}}, toA(pipeline)...)
	cur, err := scratch.Aggregate(ctx, pipe)
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []bson.Raw
	for cur.Next(ctx) {
		out = append(out, append(bson.Raw(nil), cur.Current...))
	}
	return out, cur.Err()
}

// FerretDB refuses a field name with a dot, which an update event's
// updatedFields has for a change inside a sub-document ("waiting.x"): in
// the scratch collection the dots are pathDot. A stage's path does not
// reach into such a field in MongoDB either.
const pathDot = "\uE000" // a private-use character

// escapePaths returns ev with the dots of its updatedFields' names
// replaced by pathDot.
func escapePaths(ev bson.D) bson.D { return renamePaths(ev, ".", pathDot) }

// unescapePaths undoes escapePaths on an event the stages returned.
func unescapePaths(raw bson.Raw) (bson.Raw, error) {
	if !bytes.Contains(raw, []byte(pathDot)) {
		return raw, nil
	}
	var ev bson.D
	if err := bson.Unmarshal(raw, &ev); err != nil {
		return nil, err
	}
	return bson.Marshal(renamePaths(ev, pathDot, "."))
}

// renamePaths returns ev with old replaced by new in the names of its
// updateDescription.updatedFields, leaving ev as it was.
func renamePaths(ev bson.D, old, new string) bson.D {
	out := append(bson.D(nil), ev...)
	for i, e := range out {
		desc, ok := e.Value.(bson.D)
		if e.Key != "updateDescription" || !ok {
			continue
		}
		desc = append(bson.D(nil), desc...)
		for j, d := range desc {
			if fields, ok := d.Value.(bson.D); ok && d.Key == "updatedFields" {
				renamed := make(bson.D, len(fields))
				for k, f := range fields {
					renamed[k] = bson.E{Key: strings.ReplaceAll(f.Key, old, new), Value: f.Value}
				}
				desc[j].Value = renamed
			}
		}
		out[i].Value = desc
	}
	return out
}

// scratchDB holds the events being filtered; change streams never report
// it.
const scratchDB = "mongotest_changestreams"

func toA(docs []bson.Raw) bson.A {
	a := make(bson.A, len(docs))
	for i, d := range docs {
		a[i] = d
	}
	return a
}

// memoKey names a pipeline applied to a batch of events.
func memoKey(pipeline, events []bson.Raw) [32]byte {
	h := sha256.New()
	for _, part := range [][]bson.Raw{pipeline, events} {
		for _, d := range part {
			h.Write(d)
		}
		h.Write([]byte{0})
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// filterMemo remembers the last evaluations of pipelines over event
// batches, and lets concurrent askers of one wait for it.
type filterMemo struct {
	mu    sync.Mutex
	calls map[[32]byte]*filterCall
	order [][32]byte // oldest first; at most memoSize kept
}

type filterCall struct {
	done chan struct{}
	out  []bson.Raw
	err  error
}

// memoSize is how many evaluations are kept: enough for every stream of
// a test to read the same batch.
const memoSize = 256

// start returns the evaluation of key, and whether the caller must run it
// (then calling finish).
func (m *filterMemo) start(key [32]byte) (c *filterCall, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.calls[key]; c != nil {
		return c, false
	}
	if m.calls == nil {
		m.calls = map[[32]byte]*filterCall{}
	}
	c = &filterCall{done: make(chan struct{})}
	m.calls[key] = c
	m.order = append(m.order, key)
	if len(m.order) > memoSize {
		delete(m.calls, m.order[0])
		m.order = m.order[1:]
	}
	return c, true
}

// finish publishes c's result; a failed evaluation is not kept, so that the
// next asker tries again.
func (m *filterMemo) finish(key [32]byte, c *filterCall) {
	if c.err != nil {
		m.mu.Lock()
		if m.calls[key] == c {
			delete(m.calls, key)
		}
		m.mu.Unlock()
	}
	close(c.done)
}
