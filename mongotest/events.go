package mongotest

import (
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The change events of a stream, as MongoDB documents them, from the
// ring's items: oplog entries and the drops the proxy saw.

// next turns items into st's events, moving st.pos past them.
func (st *stream) next(items []item) []bson.D {
	var events []bson.D
	for _, it := range items {
		st.pos = it.pos
		if it.drop != nil {
			if ev := st.dropEvents(*it.drop); ev != nil {
				events = append(events, ev...)
				if st.invalidated {
					return events
				}
			}
			continue
		}
		if !st.watches(it.e.NS) {
			continue
		}
		if ev := st.event(it); ev != nil {
			events = append(events, ev)
		}
	}
	return events
}

// dropEvents returns the drop (and invalidate) events d gives st, or nil.
func (st *stream) dropEvents(d drop) []bson.D {
	if st.db != "" && st.db != d.db || d.coll != "" && st.coll != "" && st.coll != d.coll {
		return nil
	}
	var events []bson.D
	if d.coll != "" && (st.coll != "" || st.db != "") {
		events = append(events, bson.D{
			{Key: "_id", Value: d.pos.token()},
			{Key: "operationType", Value: "drop"},
			{Key: "clusterTime", Value: d.pos.ts},
			{Key: "wallTime", Value: d.wall},
			{Key: "ns", Value: bson.D{{Key: "db", Value: d.db}, {Key: "coll", Value: d.coll}}},
		})
	}
	if d.coll == "" {
		events = append(events, bson.D{
			{Key: "_id", Value: d.pos.token()},
			{Key: "operationType", Value: "dropDatabase"},
			{Key: "clusterTime", Value: d.pos.ts},
			{Key: "wallTime", Value: d.wall},
			{Key: "ns", Value: bson.D{{Key: "db", Value: d.db}}},
		})
	}
	if st.db == "" || (st.coll == "" && d.coll != "") {
		return events // a database or cluster stream goes on after a collection's drop
	}
	inv := position{ts: d.pos.ts, seq: d.pos.seq, kind: kindInvalidate}
	st.pos, st.invalidated = inv, true
	return append(events, bson.D{
		{Key: "_id", Value: inv.token()},
		{Key: "operationType", Value: "invalidate"},
		{Key: "clusterTime", Value: d.pos.ts},
		{Key: "wallTime", Value: d.wall},
	})
}

// event turns one oplog entry into st's change event.
func (st *stream) event(it item) bson.D {
	e, p := it.e, it.pos
	db, coll, _ := strings.Cut(e.NS, ".")
	ev := bson.D{
		{Key: "_id", Value: p.token()},
		{Key: "operationType", Value: ""},
		{Key: "clusterTime", Value: e.TS},
		{Key: "wallTime", Value: it.wall},
	}
	ns := bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: db}, {Key: "coll", Value: coll}}}
	switch e.Op {
	case "i":
		id := e.O.Lookup("_id")
		ev[1].Value = "insert"
		return append(ev, bson.E{Key: "fullDocument", Value: e.O}, ns,
			bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}})
	case "d":
		id := e.O.Lookup("_id")
		ev[1].Value = "delete"
		return append(ev, ns, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}})
	case "u":
		post, ok := e.O.Lookup("$set").DocumentOK()
		if !ok {
			return nil
		}
		id := e.O2.Lookup("_id")
		if it.replace {
			ev[1].Value = "replace"
			return append(ev, bson.E{Key: "fullDocument", Value: post}, ns,
				bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}})
		}
		ev[1].Value = "update"
		if st.fullDocument != "default" {
			ev = append(ev, bson.E{Key: "fullDocument", Value: post})
		}
		return append(ev, ns, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
			bson.E{Key: "updateDescription", Value: it.desc})
	}
	return nil
}

// stateAfter returns the document as an oplog entry left it, nil if gone
// or unknown.
func stateAfter(e *entry) bson.Raw {
	switch {
	case e == nil || e.Op == "d":
		return nil
	case e.Op == "u":
		d, _ := e.O.Lookup("$set").DocumentOK()
		return d
	}
	return e.O
}

// describe returns the updateDescription from pre to post: the fields set
// or changed, and removed. Inside a sub-document present before and after,
// fields are reported by their dotted paths ("waiting.x"), as MongoDB does
// for an update of them; an array, or a field that changed type, is
// reported whole. With no known pre-image every field counts as set.
func describe(pre, post bson.Raw) bson.D {
	updated := bson.D{}
	removed := bson.A{}
	diff(pre, post, "", &updated, &removed)
	return bson.D{{Key: "updatedFields", Value: updated}, {Key: "removedFields", Value: removed},
		{Key: "truncatedArrays", Value: bson.A{}}}
}

// diff adds to updated and removed the changes from pre to post, their
// paths prefixed with prefix.
func diff(pre, post bson.Raw, prefix string, updated *bson.D, removed *bson.A) {
	before := map[string]bson.RawValue{}
	if pre != nil {
		old, _ := pre.Elements()
		for _, el := range old {
			before[el.Key()] = el.Value()
		}
	}
	elems, _ := post.Elements()
	for _, el := range elems {
		old, had := before[el.Key()]
		delete(before, el.Key())
		if prefix == "" && el.Key() == "_id" {
			continue
		}
		path := prefix + el.Key()
		switch v := el.Value(); {
		case pre != nil && had && old.Equal(v):
		case pre != nil && had && old.Type == bson.TypeEmbeddedDocument && v.Type == bson.TypeEmbeddedDocument:
			diff(old.Document(), v.Document(), path+".", updated, removed)
		default:
			*updated = append(*updated, bson.E{Key: path, Value: v})
		}
	}
	old, _ := pre.Elements()
	for _, el := range old { // in pre's order
		if _, gone := before[el.Key()]; gone {
			*removed = append(*removed, prefix+el.Key())
		}
	}
}
