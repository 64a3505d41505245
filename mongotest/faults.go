package mongotest

import (
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// faults are what a replica set under stress does to its clients that a
// single healthy node does not: writes applied but answered with an error
// (a stepdown, a write concern not met), change events that come late, and
// change streams refused. The Server's methods switch them; the proxy and
// the streams ask them.
type faults struct {
	mu         sync.Mutex
	failWrites int // writes still to fail
	failCode   int32
	failLabels []string
	concern    bool          // fail them with a writeConcernError instead of a command error
	eventDelay time.Duration // change events reach streams no earlier than this after their write
	refuseCode int32         // $changeStream answers this error; 0: served
	refuseMsg  string
}

// writeFailure returns, for a write command, the error reply that replaces
// its own, and whether there is one: it counts one of the writes to fail.
func (f *faults) writeFailure(name string, answer []byte, m *member) (bson.D, bool) {
	switch name {
	case "insert", "update", "delete", "findAndModify", "findandmodify":
	default:
		return nil, false
	}
	f.mu.Lock()
	if f.failWrites == 0 {
		f.mu.Unlock()
		return nil, false
	}
	f.failWrites--
	code, labels, concern := f.failCode, f.failLabels, f.concern
	f.mu.Unlock()
	tv := m.stepped()
	if !concern {
		d := commandError(code, codeName(code), fmt.Sprintf("mongotest: FailWrites (%s)", codeName(code)), labels...)
		if tv == nil {
			return d, true
		}
		return append(d, bson.E{Key: "topologyVersion", Value: tv}), true
	}
	// The write's own reply, with the write concern it did not meet: the
	// write was applied.
	res, _ := command(answer)
	elems, _ := res.Elements()
	d := bson.D{}
	for _, e := range elems {
		if k := e.Key(); k != "ok" && k != "writeConcernError" && k != "errorLabels" {
			d = append(d, bson.E{Key: k, Value: e.Value()})
		}
	}
	wce := bson.D{
		{Key: "code", Value: code}, {Key: "codeName", Value: codeName(code)},
		{Key: "errmsg", Value: fmt.Sprintf("mongotest: FailWriteConcern (%s)", codeName(code))},
	}
	if tv != nil {
		wce = append(wce, bson.E{Key: "topologyVersion", Value: tv})
	}
	d = append(d, bson.E{Key: "writeConcernError", Value: wce})
	if len(labels) > 0 {
		d = append(d, bson.E{Key: "errorLabels", Value: labels})
	}
	return append(d, bson.E{Key: "ok", Value: 1.0}), true
}

// refusal returns the error a $changeStream aggregate gets, if streams are
// refused.
func (f *faults) refusal() (bson.D, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuseCode == 0 {
		return nil, false
	}
	return commandError(f.refuseCode, codeName(f.refuseCode), f.refuseMsg), true
}

func (f *faults) delay() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.eventDelay
}

// codeNames are MongoDB's names of the codes a test is likely to inject
// (src/mongo/base/error_codes.yml).
var codeNames = map[int32]string{
	6: "HostUnreachable", 7: "HostNotFound", 13: "Unauthorized", 50: "MaxTimeMSExpired",
	64: "WriteConcernFailed", 79: "UnknownReplWriteConcern", 89: "NetworkTimeout",
	91: "ShutdownInProgress", 100: "UnsatisfiableWriteConcern", 112: "WriteConflict",
	189: "PrimarySteppedDown", 262: "ExceededTimeLimit", 8000: "AtlasError",
	9001: "SocketException", 10107: "NotWritablePrimary", 11600: "InterruptedAtShutdown",
	11602: "InterruptedDueToReplStateChange", 13435: "NotPrimaryNoSecondaryOk",
	13436: "NotPrimaryOrSecondary",
}

func codeName(code int32) string {
	if n, ok := codeNames[code]; ok {
		return n
	}
	return fmt.Sprintf("Location%d", code)
}

// FailWrites answers the next n write commands (insert, update, delete,
// findAndModify) of any client with a command error of that code and those
// error labels, after applying them: as a primary that stepped down after
// the write replicated does (189 PrimarySteppedDown, 11602
// InterruptedDueToReplStateChange, 10107 NotWritablePrimary or 91
// ShutdownInProgress, with the "RetryableWriteError" label). The error
// carries a new topologyVersion, as a stepdown's does, so that drivers
// take the server for changed and check it again at once. n 0 turns
// failures off; a later call replaces an earlier one. Writes sent with w:0
// are not counted.
func (s *Server) FailWrites(n int, code int, labels ...string) {
	s.failWrites(n, code, false, labels)
}

// FailWriteConcern is FailWrites with a write concern error: the next n
// write commands are applied and answered with their own reply plus a
// writeConcernError of that code (64 WriteConcernFailed, as at a
// wtimeout; 100 UnsatisfiableWriteConcern), and those error labels.
func (s *Server) FailWriteConcern(n int, code int, labels ...string) {
	s.failWrites(n, code, true, labels)
}

func (s *Server) failWrites(n, code int, concern bool, labels []string) {
	s.proxy.faults.setFailWrites(n, int32(code), concern, labels)
}

func (f *faults) setFailWrites(n int, code int32, concern bool, labels []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failWrites, f.failCode, f.concern = max(n, 0), code, concern
	f.failLabels = append([]string(nil), labels...)
}

// DelayEvents holds every change event back from streams until d after its
// write, as a replica set does until a majority of members has the write
// (members in other regions), or a sharded cluster until every shard has
// spoken (idle ones every periodicNoopIntervalSecs, 10s). 0 turns it off.
func (s *Server) DelayEvents(d time.Duration) { s.proxy.setEventDelay(d) }

func (p *proxy) setEventDelay(d time.Duration) {
	p.faults.mu.Lock()
	p.faults.eventDelay = max(d, 0)
	p.faults.mu.Unlock()
	if p.streams != nil {
		p.streams.wake()
	}
}

// RefuseChangeStreams answers every aggregate that opens a change stream
// with that error from now on, as Atlas's shared tiers do (8000
// AtlasError) or a server to a user without the changeStream privilege
// (13 Unauthorized). Streams already open go on. Code 0 serves them again.
func (s *Server) RefuseChangeStreams(code int, msg string) {
	s.proxy.faults.setRefusal(int32(code), msg)
}

func (f *faults) setRefusal(code int32, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuseCode, f.refuseMsg = code, msg
}

// Failover makes the server behave from now on as a new primary elected
// after a stepdown: its hello reports a new electionId and topologyVersion,
// its localTime is clockOffset ahead of the host's clock (negative: behind),
// as another member's clock may be, and every open connection is dropped,
// as a stepdown drops them. The data stays: what was acknowledged was
// replicated. Offsets do not add up: each Failover sets the new member's.
func (s *Server) Failover(clockOffset time.Duration) { s.proxy.failover(clockOffset) }

func (p *proxy) failover(clockOffset time.Duration) {
	p.member.failover(clockOffset)
	p.dropAll()
}
