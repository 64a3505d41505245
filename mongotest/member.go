package mongotest

import (
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// member is what mongotest says of itself in its hello replies, as the
// primary of a replica set does: the election that made it primary
// (electionId), the version of its state (topologyVersion, which drivers
// compare to ignore stale errors and which wakes their awaitable hellos
// when it changes), and its clock, which after a failover is another
// member's.
//
// mongotest stays a standalone to drivers (no setName): they neither
// retry writes nor send transactions' fields, which FerretDB does not
// serve.
type member struct {
	standalone  bool // WithElectionID(false): no electionId nor topologyVersion, as a standalone
	mu          sync.Mutex
	processID   bson.ObjectID // topologyVersion.processId: new at every Start and Restart
	counter     int64         // topologyVersion.counter
	electionID  bson.ObjectID
	clockOffset time.Duration
	changed     chan struct{} // closed, and replaced, when the topologyVersion changes
}

func newMember() *member {
	return &member{processID: bson.NewObjectID(), electionID: bson.NewObjectID(), changed: make(chan struct{})}
}

// failover makes the member a new primary, whose clock is offset from the
// host's.
func (m *member) failover(offset time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.electionID = bson.NewObjectID()
	m.clockOffset = offset
	m.bumpLocked()
}

// restarted is a restart of the server process: a new processId.
func (m *member) restarted() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.processID, m.counter = bson.NewObjectID(), -1
	m.bumpLocked()
}

// stepped is a change of state that a stepdown error reports (FailWrites):
// it returns the new topologyVersion, which the error carries, so that
// drivers take it as news and not as a stale error.
func (m *member) stepped() bson.D {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bumpLocked()
	if m.standalone {
		return nil
	}
	return m.topologyVersionLocked()
}

func (m *member) bumpLocked() {
	m.counter++
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *member) topologyVersionLocked() bson.D {
	return bson.D{{Key: "processId", Value: m.processID}, {Key: "counter", Value: m.counter}}
}

// offset is the member's clock's offset from the host's.
func (m *member) offset() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clockOffset
}

// awaitable returns, for an awaitable hello (one with maxAwaitTimeMS and the
// topologyVersion its sender knows), how long it may wait and a channel
// closed when the topologyVersion changes. A server answers such a hello
// when its state changes or the time runs out; at once when the sender's
// version is not its own. ok is false for any other hello.
func (m *member) awaitable(body bson.Raw) (wait time.Duration, changed <-chan struct{}, ok bool) {
	ms, okMS := body.Lookup("maxAwaitTimeMS").AsInt64OK()
	tv, okTV := body.Lookup("topologyVersion").DocumentOK()
	if !okMS || !okTV || ms <= 0 {
		return 0, nil, false
	}
	pid, _ := tv.Lookup("processId").ObjectIDOK()
	counter, _ := tv.Lookup("counter").AsInt64OK()
	m.mu.Lock()
	defer m.mu.Unlock()
	if pid != m.processID || counter != m.counter {
		return 0, nil, false
	}
	return time.Duration(ms) * time.Millisecond, m.changed, true
}

// hello rewrites FerretDB's hello reply as this member's: its localTime on
// the member's clock, its electionId and topologyVersion.
func (m *member) hello(req, answer []byte) []byte {
	res, _ := command(answer)
	if res == nil {
		return answer
	}
	elems, err := res.Elements()
	if err != nil {
		return answer
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	doc := make(bson.D, 0, len(elems)+2)
	for _, e := range elems {
		switch e.Key() {
		case "electionId", "topologyVersion":
			continue
		case "localTime":
			if t, ok := e.Value().TimeOK(); ok {
				doc = append(doc, bson.E{Key: "localTime", Value: t.Add(m.clockOffset)})
				continue
			}
		}
		doc = append(doc, bson.E{Key: e.Key(), Value: e.Value()})
	}
	if ok, _ := res.Lookup("ok").AsFloat64OK(); ok == 1 && !m.standalone {
		doc = append(doc, bson.E{Key: "electionId", Value: m.electionID},
			bson.E{Key: "topologyVersion", Value: m.topologyVersionLocked()})
	}
	return reply(req, doc)
}

// isHello reports whether a command is a hello (or its legacy name).
func isHello(name string) bool {
	return name == "hello" || name == "isMaster" || name == "ismaster"
}
