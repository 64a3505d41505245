package mongolock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// These tests feed the watcher scripted event sources: no server.

// step is one thing a scripted stream does: deliver an event, or fail.
type step struct {
	op, name string
	err      error
	token    string // moves the resume token on without an event (postBatchResumeToken)
	taken    bool   // an update that sets a holder (an acquire), not a release
	joiner   string // an update that only says this Locker joined the waiting ones
}

type scriptStream struct {
	batched   bool // the events come in one batch (see RemainingBatchLength)
	hangClose bool // Close waits for its ctx: a server that does not answer
	steps     []step
	i         int
	err       error
	token     bson.Raw
	closed    chan struct{}
}

func (s *scriptStream) Next(ctx context.Context) bool {
	if s.i < len(s.steps) {
		st := s.steps[s.i]
		s.i++
		if st.token != "" {
			s.token = tokenOf(st.token)
		}
		if st.err != nil {
			s.err = st.err
			return false
		}
		s.token = tokenOf(st.name + "/" + st.op)
		return true
	}
	<-ctx.Done() // a live stream with nothing to say
	s.err = ctx.Err()
	return false
}

func (s *scriptStream) Decode(v any) error {
	st := s.steps[s.i-1]
	var holder any // null: a release
	if st.taken {
		holder = "h"
	}
	fields := bson.D{{Key: "holder", Value: holder}}
	if st.joiner != "" {
		fields = bson.D{{Key: "lastJoined", Value: st.joiner}}
	}
	raw, _ := bson.Marshal(bson.D{
		{Key: "operationType", Value: st.op},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: st.name}}},
		{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: fields}}},
	})
	return bson.Unmarshal(raw, v)
}

func (s *scriptStream) ResumeToken() bson.Raw { return s.token }

// RemainingBatchLength says the rest of the script up to its next error is
// one batch when batched is set, and that every event is a batch otherwise.
func (s *scriptStream) RemainingBatchLength() int {
	if !s.batched {
		return 0
	}
	n := 0
	for _, st := range s.steps[s.i:] {
		if st.err != nil {
			break
		}
		n++
	}
	return n
}
func (s *scriptStream) Err() error { return s.err }
func (s *scriptStream) ID() int64  { return 1 }
func (s *scriptStream) Close(ctx context.Context) error {
	close(s.closed)
	if s.hangClose {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func tokenOf(s string) bson.Raw {
	raw, _ := bson.Marshal(bson.D{{Key: "_data", Value: s}})
	return raw
}

// script opens the given streams in turn, recording the resume token each
// open was given; opens past the script fail with errs[i] or block.
type script struct {
	batched   bool
	hangClose bool
	mu        sync.Mutex
	streams   [][]step
	openErr   []error // per open, before streams are used; nil: use a stream
	opens     []string
	all       []*scriptStream
}

func (sc *script) open(ctx context.Context, token bson.Raw) (eventStream, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	tok := "none"
	if token != nil {
		tok = token.Lookup("_data").StringValue()
	}
	sc.opens = append(sc.opens, tok)
	if len(sc.openErr) > 0 {
		err := sc.openErr[0]
		sc.openErr = sc.openErr[1:]
		if err != nil {
			return nil, err
		}
	}
	var steps []step
	if len(sc.streams) > 0 {
		steps, sc.streams = sc.streams[0], sc.streams[1:]
	}
	s := &scriptStream{steps: steps, closed: make(chan struct{}), hangClose: sc.hangClose, batched: sc.batched}
	sc.all = append(sc.all, s)
	return s, nil
}

func (sc *script) openedWith() []string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return slices.Clone(sc.opens)
}

// recorder is a wakeSink that records what it is told.
type recorder struct {
	mu   sync.Mutex
	got  []string
	cond chan struct{}
}

func newRecorder() *recorder { return &recorder{cond: make(chan struct{}, 100)} }

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
	select {
	case r.cond <- struct{}{}:
	default:
	}
}
func (r *recorder) notify(name string)                     { r.add("wake " + name) }
func (r *recorder) notifyAll()                             { r.add("wake all") }
func (r *recorder) taken(name string, _ time.Time, _ bool) { r.add("taken " + name) }
func (r *recorder) turn(name, heir string, _ time.Time)    { r.add("turn " + name + " " + heir) }
func (r *recorder) readersChanged(name string)             { r.add("readers " + name) }
func (r *recorder) joined(name, locker string)             { r.add("joined " + name + " " + locker) }
func (r *recorder) leader(string, leadership, string)      {}
func (r *recorder) eventLag(time.Duration) bool            { return false }
func (r *recorder) streaming(on bool) {
	if on {
		r.add("on")
	} else {
		r.add("off")
	}
}

// waitFor waits until the recorder has n entries and returns them.
func (r *recorder) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.got)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.cond:
		case <-deadline:
			t.Fatalf("waited for %d entries, got %q", n, got)
		}
	}
}

func newTestWatcher(sc *script, sink wakeSink, log *slog.Logger) *watcher {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &watcher{open: sc.open, sink: sink, log: log}
}

func TestWatcherFansOutByName(t *testing.T) {
	sc := &script{streams: [][]step{{{op: "update", name: "a"}, {op: "delete", name: "b"}, {op: "update", name: "a"}}}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	got := rec.waitFor(t, 5)
	w.close()
	want := []string{"wake all", "on", "wake a", "wake b", "wake a"}
	if !slices.Equal(got[:5], want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestWatcherResumesAfterTransientError(t *testing.T) {
	transient := mongo.CommandError{Code: 6, Name: "HostUnreachable", Labels: []string{"ResumableChangeStreamError"}}
	sc := &script{streams: [][]step{
		{{op: "update", name: "a"}, {err: transient}},
		{{op: "update", name: "b"}},
	}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	got := rec.waitFor(t, 6)
	w.close()
	// Resuming does not wake everyone: no event was missed.
	want := []string{"wake all", "on", "wake a", "off", "on", "wake b"}
	if !slices.Equal(got[:6], want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if opens := sc.openedWith(); !slices.Equal(opens, []string{"none", "a/update"}) {
		t.Fatalf("opened with tokens %q, want a fresh start then a resume after a/update", opens)
	}
}

func TestWatcherRestartsAfterInvalidate(t *testing.T) {
	sc := &script{streams: [][]step{
		{{op: "update", name: "a"}, {op: "invalidate"}},
		{{op: "update", name: "b"}},
	}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	got := rec.waitFor(t, 8)
	w.close()
	want := []string{"wake all", "on", "wake a", "wake all", "off", "wake all", "on", "wake b"}
	if !slices.Equal(got[:8], want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if opens := sc.openedWith(); !slices.Equal(opens, []string{"none", "none"}) {
		t.Fatalf("opened with tokens %q, want two fresh starts", opens)
	}
}

func TestWatcherRestartsWhenTokenLost(t *testing.T) {
	lost := mongo.CommandError{Code: 286, Name: "ChangeStreamHistoryLost"}
	transient := mongo.CommandError{Code: 6, Name: "HostUnreachable"}
	sc := &script{
		streams: [][]step{{{op: "update", name: "a"}, {err: transient}}, {{op: "update", name: "c"}}},
		openErr: []error{nil, lost}, // the resume after a/update fails: history lost
	}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	got := rec.waitFor(t, 7)
	w.close()
	want := []string{"wake all", "on", "wake a", "off", "wake all", "on", "wake c"}
	if !slices.Equal(got[:7], want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if opens := sc.openedWith(); !slices.Equal(opens, []string{"none", "a/update", "none"}) {
		t.Fatalf("opened with tokens %q", opens)
	}
}

type lineCounter struct {
	mu sync.Mutex
	n  int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return len(p), nil
}

func TestWatcherUnsupportedLogsOnceAndStaysOff(t *testing.T) {
	for _, err := range []error{
		mongo.CommandError{Code: 238, Name: "NotImplemented"},
		mongo.CommandError{Code: 40573, Name: "Location40573"},
		mongo.CommandError{Code: 13, Name: "Unauthorized"},
	} {
		sc := &script{openErr: []error{err, err, err}}
		rec := newRecorder()
		lines := &lineCounter{}
		w := newTestWatcher(sc, rec, slog.New(slog.NewTextHandler(lines, nil)))
		w.want()
		rec.waitFor(t, 1) // "off" when the goroutine gives up
		w.wg.Wait()
		w.unwant()
		w.want() // a later waiter does not try again
		w.close()
		if n := len(sc.openedWith()); n != 1 {
			t.Fatalf("%v: opened %d times, want 1", err, n)
		}
		if lines.n != 1 {
			t.Fatalf("%v: logged %d lines, want 1", err, lines.n)
		}
	}
}

func TestWatcherStopsAfterLastWaiter(t *testing.T) {
	sc := &script{streams: [][]step{{}}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	w.want()
	rec.waitFor(t, 2)
	w.unwant()
	w.unwant()
	sc.mu.Lock()
	s := sc.all[0]
	sc.mu.Unlock()
	select {
	case <-s.closed: // closed after lingering
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open after the last waiter left")
	}
	w.wg.Wait()
	w.close()
	if errors.Is(s.err, context.Canceled) == false {
		t.Fatalf("stream ended with %v", s.err)
	}
}

// TestWatcherFoldsBatch: in one batch, a release of a that is followed by
// a new acquire of a wakes no one; a release of b that stays released
// does.
func TestWatcherFoldsBatch(t *testing.T) {
	sc := &script{batched: true, streams: [][]step{{
		{op: "update", name: "a"}, {op: "update", name: "b"}, {op: "update", name: "a", taken: true},
	}}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	got := rec.waitFor(t, 4)
	w.close()
	want := []string{"wake all", "on", "taken a", "wake b"}
	if !slices.Equal(got[:4], want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestWatcherFlushesBatchEndingInJoin: a batch whose last event only says a
// Locker joined the waiting ones still delivers the release folded before
// it, at once (it once waited for the next batch).
func TestWatcherFlushesBatchEndingInJoin(t *testing.T) {
	sc := &script{batched: true, streams: [][]step{{
		{op: "update", name: "a"}, {op: "update", name: "a", joiner: "x"},
	}}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	got := rec.waitFor(t, 4)
	w.close()
	want := []string{"wake all", "on", "joined a x", "wake a"}
	if !slices.Equal(got[:4], want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
