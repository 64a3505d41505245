package mongolock

import (
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// changeEvent is what the watcher reads of a change event: the fields
// holderPipeline keeps.
type changeEvent struct {
	OperationType string `bson:"operationType"`
	DocumentKey   struct {
		ID string `bson:"_id"`
	} `bson:"documentKey"`
	UpdateDescription struct {
		UpdatedFields bson.Raw `bson:"updatedFields"`
	} `bson:"updateDescription"`
	FullDocument bson.Raw  `bson:"fullDocument"` // an insert's
	WallTime     time.Time `bson:"wallTime"`     // the server's time of the write (6.0+)
}

// heir returns the Locker a release gave the next turn to ("" for
// anyone), and the server time that turn ends.
func (ev *changeEvent) heir() (string, time.Time) {
	f := ev.UpdateDescription.UpdatedFields
	h, err := f.LookupErr("heir")
	if err != nil || h.Type != bson.TypeString {
		return "", time.Time{}
	}
	until, ok := f.Lookup("expiresAt").TimeOK()
	if !ok {
		return "", time.Time{}
	}
	return h.StringValue(), until
}

// joiner returns the Locker that joined the lock's waiting Lockers, ""
// when the event is not a join.
func (ev *changeEvent) joiner() string {
	f := ev.UpdateDescription.UpdatedFields
	if _, err := f.LookupErr("holder"); err == nil {
		return "" // a change of holder
	}
	v, _ := f.Lookup("lastJoined").StringValueOK()
	l, _, _ := strings.Cut(v, "@") // id@time of the join
	return l
}

// readersOnly reports whether the event changed an RWMutex's readers and
// not its writer: news for a writer waiting for them to leave, and for no
// one else.
func (ev *changeEvent) readersOnly() bool {
	f := ev.UpdateDescription.UpdatedFields
	if ev.OperationType != "update" {
		return false
	}
	if _, err := f.LookupErr("holder"); err == nil {
		return false
	}
	elems, _ := f.Elements()
	for _, e := range elems {
		if k := e.Key(); k == "readers" || strings.HasPrefix(k, "readers.") {
			return true
		}
	}
	return false
}

// leadership returns the fencing token and value an acquire wrote, when
// the event tells both (a value set to what it was is not reported).
func (ev *changeEvent) leadership() (leadership, string, bool) {
	f := ev.UpdateDescription.UpdatedFields
	if ev.OperationType == "insert" {
		f = ev.FullDocument // the first acquire of a name
	}
	holder, ok := f.Lookup("holder").StringValueOK()
	if !ok {
		return leadership{}, "", false
	}
	fence, ok := f.Lookup("fence").AsInt64OK()
	if !ok {
		return leadership{}, "", false
	}
	value, ok := f.Lookup("value").StringValueOK()
	return leadership{fence, holder}, value, ok
}

// leaseEnd returns the lease end an acquire wrote (an insert's is in its
// full document: the first acquire of a name), zero when the event does
// not tell.
func (ev *changeEvent) leaseEnd() time.Time {
	f := ev.UpdateDescription.UpdatedFields
	if ev.OperationType == "insert" {
		f = ev.FullDocument
	}
	until, _ := f.Lookup("expiresAt").TimeOK()
	return until
}

// kept reports whether the event hands the lock to no one until its lease
// ends (WithHoldAtLeast): no release comes before.
func (ev *changeEvent) kept() bool {
	h, _ := ev.UpdateDescription.UpdatedFields.Lookup("holder").StringValueOK()
	return kept(h)
}

// freed reports whether the event may have freed its lock; false when it
// shows the lock taken (an acquire sets a holder).
func (ev *changeEvent) freed() bool {
	switch ev.OperationType {
	case "insert":
		return false
	case "update":
		h, err := ev.UpdateDescription.UpdatedFields.LookupErr("holder")
		return err != nil || h.Type == bson.TypeNull
	}
	return true
}

// holderPipeline passes only the events that change a lock's holder (a
// release frees it, an acquire takes it), say who joined its waiting
// Lockers, or change an RWMutex's readers; renewals, which touch only expiresAt, are filtered out on the
// server. It keeps only the fields the watcher reads.
var holderPipeline = mongo.Pipeline{
	{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{
			"insert", "delete", "replace", "invalidate", "drop", "dropDatabase", "rename"}}}}},
		bson.D{
			{Key: "operationType", Value: "update"},
			{Key: "updateDescription.updatedFields.holder", Value: bson.D{{Key: "$exists", Value: true}}},
		},
		bson.D{
			{Key: "operationType", Value: "update"},
			{Key: "updateDescription.updatedFields.lastJoined", Value: bson.D{{Key: "$exists", Value: true}}},
		},
		bson.D{
			// A reader left an RWMutex (a $pull reports the whole array).
			{Key: "operationType", Value: "update"},
			{Key: "updateDescription.updatedFields.readers", Value: bson.D{{Key: "$exists", Value: true}}},
		},
	}}}}},
	{{Key: "$project", Value: bson.D{{Key: "operationType", Value: 1}, {Key: "documentKey", Value: 1},
		{Key: "updateDescription", Value: 1}, {Key: "fullDocument", Value: 1}, {Key: "wallTime", Value: 1}}}},
}
