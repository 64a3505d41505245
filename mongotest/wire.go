package mongotest

import (
	"encoding/binary"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// command returns the body of an OP_MSG request (its kind-0 section) and
// the command's name, or nil when msg is not an OP_MSG with a body.
func command(msg []byte) (bson.Raw, string) {
	if len(msg) < headerLen+5 || binary.LittleEndian.Uint32(msg[12:]) != opMsg {
		return nil, ""
	}
	rest := msg[headerLen+4:]
	for len(rest) > 0 {
		kind := rest[0]
		rest = rest[1:]
		if len(rest) < 4 {
			return nil, ""
		}
		n := int(binary.LittleEndian.Uint32(rest))
		if n < 5 || n > len(rest) {
			return nil, ""
		}
		if kind == 0 {
			body := bson.Raw(rest[:n])
			elems, err := body.Elements()
			if err != nil || len(elems) == 0 {
				return nil, ""
			}
			return body, elems[0].Key()
		}
		rest = rest[n:] // a document sequence: size, identifier, documents
	}
	return nil, ""
}

var nextRequestID atomic.Int32

// reply builds an OP_MSG answering the request req with the document doc.
func reply(req []byte, doc any) []byte {
	body, err := bson.Marshal(doc)
	if err != nil {
		body, _ = bson.Marshal(bson.D{{Key: "ok", Value: 0}, {Key: "errmsg", Value: err.Error()}})
	}
	n := headerLen + 4 + 1 + len(body)
	msg := make([]byte, n)
	binary.LittleEndian.PutUint32(msg[0:], uint32(n))
	binary.LittleEndian.PutUint32(msg[4:], uint32(nextRequestID.Add(1)))
	copy(msg[8:12], req[4:8]) // responseTo: the request's id
	binary.LittleEndian.PutUint32(msg[12:], opMsg)
	// flags 0, then one kind-0 section
	msg[headerLen+4] = 0
	copy(msg[headerLen+5:], body)
	return msg
}

// commandError is a server error reply, with MongoDB's code, name and
// labels.
func commandError(code int32, name, msg string, labels ...string) bson.D {
	d := bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: msg}, {Key: "code", Value: code}, {Key: "codeName", Value: name}}
	if len(labels) > 0 {
		d = append(d, bson.E{Key: "errorLabels", Value: labels})
	}
	return d
}

// documents returns the documents of the field of an OP_MSG request: the
// array in its body, or its document sequence (kind-1 section) of that
// identifier, as drivers send `updates` and `documents`.
func documents(msg []byte, body bson.Raw, field string) []bson.Raw {
	var out []bson.Raw
	if arr, ok := body.Lookup(field).ArrayOK(); ok {
		vals, _ := arr.Values()
		for _, v := range vals {
			if d, ok := v.DocumentOK(); ok {
				out = append(out, d)
			}
		}
		return out
	}
	if len(msg) < headerLen+5 {
		return nil
	}
	rest := msg[headerLen+4:]
	for len(rest) > 5 {
		kind := rest[0]
		rest = rest[1:]
		n := int(binary.LittleEndian.Uint32(rest))
		if n < 5 || n > len(rest) {
			return nil
		}
		section := rest[4:n]
		rest = rest[n:]
		if kind != 1 {
			continue
		}
		id, docs, ok := bytesCut(section, 0)
		if !ok || string(id) != field {
			continue
		}
		for len(docs) >= 5 {
			m := int(binary.LittleEndian.Uint32(docs))
			if m < 5 || m > len(docs) {
				return out
			}
			out = append(out, bson.Raw(docs[:m]))
			docs = docs[m:]
		}
	}
	return out
}

func bytesCut(b []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

// replacement reports whether the write command replaces whole documents
// (an update without operators), which MongoDB reports as "replace"
// events and FerretDB's oplog logs like any update.
func replacement(msg []byte, body bson.Raw, name string) bool {
	isReplacement := func(u bson.RawValue) bool {
		d, ok := u.DocumentOK()
		if !ok {
			return false // an update pipeline
		}
		elems, err := d.Elements()
		return err == nil && len(elems) > 0 && elems[0].Key()[0] != '$'
	}
	switch name {
	case "update":
		ups := documents(msg, body, "updates")
		for _, u := range ups {
			if !isReplacement(u.Lookup("u")) {
				return false
			}
		}
		return len(ups) > 0
	case "findAndModify", "findandmodify":
		return isReplacement(body.Lookup("update"))
	}
	return false
}
