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
