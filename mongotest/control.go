package mongotest

import (
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// control serves the fault switches over the wire, for tests that reach
// the server by its URI only (another process, another module): the
// command {mongotest: <switch>, ...} on any database calls the Server's
// method of that name:
//
//	{mongotest: "failWrites", n: 2, code: 189, labels: ["RetryableWriteError"]}
//	{mongotest: "failWriteConcern", n: 1, code: 64}
//	{mongotest: "failover", clockOffsetMS: 5000}
//	{mongotest: "delayEvents", ms: 1000}
//	{mongotest: "refuseChangeStreams", code: 8000, msg: "..."}
//
// MongoDB answers it with CommandNotFound (59), by which a test knows to
// skip. after, when not nil, runs once the reply was sent (a failover
// drops the connection that asked for it).
func (p *proxy) control(body bson.Raw) (res bson.D, after func()) {
	sw, _ := body.Lookup("mongotest").StringValueOK()
	num := func(key string) int64 {
		n, _ := body.Lookup(key).AsInt64OK()
		return n
	}
	var labels []string
	if arr, ok := body.Lookup("labels").ArrayOK(); ok {
		vals, _ := arr.Values()
		for _, v := range vals {
			if l, ok := v.StringValueOK(); ok {
				labels = append(labels, l)
			}
		}
	}
	ok := bson.D{{Key: "ok", Value: 1.0}}
	switch sw {
	case "failWrites", "failWriteConcern":
		p.faults.setFailWrites(int(num("n")), int32(num("code")), sw == "failWriteConcern", labels)
	case "failover":
		offset := time.Duration(num("clockOffsetMS")) * time.Millisecond
		return ok, func() { p.failover(offset) }
	case "delayEvents":
		p.setEventDelay(time.Duration(num("ms")) * time.Millisecond)
	case "refuseChangeStreams":
		msg, _ := body.Lookup("msg").StringValueOK()
		p.faults.setRefusal(int32(num("code")), msg)
	default:
		return commandError(2, "BadValue", "mongotest: unknown switch "+sw+
			" (failWrites, failWriteConcern, failover, delayEvents, refuseChangeStreams)"), nil
	}
	return ok, nil
}
