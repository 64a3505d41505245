// Package mongolock provides context-native synchronisation primitives stored
// in MongoDB: a distributed Mutex that reads like sync.Mutex, sessions whose
// keepalive goroutine renews leases until their context ends, and the
// MySQL-style advisory string locks (GetLock, ReleaseLock, RenewLock,
// IsUsedLock, IsFreeLock) of the Node package mongo-lock.
//
// A lease is not a fence: a holder paused for longer than its TTL may still
// act after another has taken the lock over. Pass Mutex.Token, which only
// ever grows for a name, to the resource you protect and have it reject
// writes that carry an older token.
package mongolock
