package mongolock

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestAcquireFilterShape pins what keeps the upserting acquires safe on
// MongoDB: since 4.2 the server retries an upsert that failed on a
// duplicate key when its filter is only equalities on a unique index's
// fields (jstests upsert_duplicate_key_retry), and that retry would update
// the held lock the filter did not match. Every upserting filter must
// hold another condition than _id's equality.
func TestAcquireFilterShape(t *testing.T) {
	now := leasePast{at: time.Now(), skew: time.Second}
	c := claim{name: "n", holder: "h", turns: claimTurns{locker: "l"}}
	// Every exclusive kind's take (mutex, election, writer) adds its
	// conditions to this filter.
	if f := acquireFilter(c, now); onlyIDEquality(f) {
		t.Errorf("acquire filter %v is only _id's equality", f)
	}
	if f := readFilter(c, now); onlyIDEquality(f) {
		t.Errorf("reader: filter %v is only _id's equality", f)
	}
}

// onlyIDEquality reports whether a filter has the shape MongoDB retries
// an upsert's duplicate key error for, on the _id index.
func onlyIDEquality(f bson.D) bool {
	for _, e := range f {
		if e.Key != "_id" {
			return false
		}
		if d, ok := e.Value.(bson.D); ok && len(d) > 0 && strings.HasPrefix(d[0].Key, "$") && d[0].Key != "$eq" {
			return false
		}
	}
	return true
}

// TestAmbiguous: every error after which a write may have been applied is
// taken for an unknown outcome; an error the server returns before
// applying anything is not.
func TestAmbiguous(t *testing.T) {
	cmd := func(code int32, labels ...string) error {
		return mongo.CommandError{Code: code, Labels: labels, Message: "x"}
	}
	unknown := map[string]error{
		"PrimarySteppedDown":              cmd(189),
		"InterruptedDueToReplStateChange": cmd(11602),
		"NotWritablePrimary":              cmd(10107),
		"ShutdownInProgress":              cmd(91),
		"RetryableWriteError label":       cmd(1234, "RetryableWriteError"),
		"write concern error":             mongo.WriteException{WriteConcernError: &mongo.WriteConcernError{Code: 64}},
		"bulk write concern error":        mongo.BulkWriteException{WriteConcernError: &mongo.WriteConcernError{Code: 100}},
		"wrapped":                         fmt.Errorf("acquiring: %w", cmd(189)),
	}
	for name, err := range unknown {
		if !ambiguous(err) {
			t.Errorf("%s: not taken for an unknown outcome", name)
		}
	}
	known := map[string]error{
		"duplicate key": mongo.WriteException{WriteErrors: mongo.WriteErrors{{Code: 11000}}},
		"bad value":     cmd(2),
		"unauthorized":  cmd(13),
		"other":         errors.New("x"),
		"nil":           nil,
	}
	for name, err := range known {
		if ambiguous(err) {
			t.Errorf("%s: taken for an unknown outcome", name)
		}
	}
}

// TestLeaseEndAcrossElections: a lease written on another primary's clock
// ends, for a taker, the skew bound later; on the same clock (or on a
// standalone, with no electionId at all) at its end.
func TestLeaseEndAcrossElections(t *testing.T) {
	e1, e2 := bson.NewObjectID(), bson.NewObjectID()
	end := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rows := []struct {
		name         string
		stamp, taker any
		want         time.Time
	}{
		{"same primary", e1, e1, end},
		{"standalone", nil, nil, end},
		{"after a failover", e1, e2, end.Add(5 * time.Second)},
		{"written before stamps, read on a replica set", nil, e1, end.Add(5 * time.Second)},
		{"written on a replica set, read on a standalone", e1, nil, end.Add(5 * time.Second)},
		{"a stamp mongolock never writes", bson.D{{Key: "x", Value: 1}}, e1, end.Add(5 * time.Second)},
	}
	for _, r := range rows {
		if sameClock(r.stamp, r.taker) != r.want.Equal(end) {
			t.Errorf("%s: sameClock = %v", r.name, !r.want.Equal(end))
		}
		s := &store{clock: &serverClock{election: r.taker}, skew: 5 * time.Second}
		if got := s.leaseEnd(&lockDoc{ExpiresAt: end, Clock: r.stamp}); !got.Equal(r.want) {
			t.Errorf("%s: lease ends %v, want %v", r.name, got, r.want)
		}
	}
}

// TestLeadershipAfter: an observer tells leaderships apart by fence and
// holder: the document going from {fence N, holder B} to {fence N,
// holder C} (B's acquire rolled back by a failover, C's took the same
// fence) is a new leader; the same leadership read twice, or an older
// one told late, is not.
func TestLeadershipAfter(t *testing.T) {
	b, c := leadership{fence: 7, holder: "B"}, leadership{fence: 7, holder: "C"}
	rows := []struct {
		name      string
		cur, last leadership
		want      bool
	}{
		{"first", b, leadership{fence: -1}, true},
		{"same fence, another holder", c, b, true},
		{"the same read again", b, b, false},
		{"later fence", leadership{fence: 8, holder: "B"}, c, true},
		{"older, told late", b, leadership{fence: 8, holder: "D"}, false},
	}
	for _, r := range rows {
		if got := r.cur.after(r.last); got != r.want {
			t.Errorf("%s: after = %v, want %v", r.name, got, r.want)
		}
	}
}
