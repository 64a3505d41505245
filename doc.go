// Package mongolock provides context-native synchronisation primitives
// stored in MongoDB, for processes on many hosts that share a database:
// "only one of us does this".
//
// # Getting started
//
// A [Locker] works on one collection; make one per process with [New]. A
// [Session] is a lease: its keepalive goroutine renews every hold it has,
// in one round trip per tick, until its context ends or [Session.Close].
// The primitives belong to a session:
//
//   - [Mutex]: Lock (waits), TryLock (ErrLocked when held), Unlock, as
//     sync.Mutex; with [WithHoldAtLeast] and [WithHoldAtMost], the hold
//     bounds of a cron job (see Example_cron).
//   - [Election]: Run, the leader loop (see the example of
//     [Election.Run]); Campaign, Resign, Leader, Observe.
//   - [Semaphore]: at most N permits held at once across processes.
//   - [RWMutex]: many readers or one writer; a waiting writer is not
//     starved.
//
// The Locker also serves the MySQL-style string locks of the Node package
// mongo-lock ([Locker.GetLock], [Locker.ReleaseLock], [Locker.RenewLock],
// [Locker.IsUsedLock], [Locker.IsFreeLock]), and the admin calls
// [Locker.List], [Locker.Status] and [Locker.ForceRelease].
//
// # Holds end before the server can give them away
//
// Every hold has a Done channel and an Err: Done closes when the hold ends
// in this process (Unlock, the session's end, or a loss), always before
// another process can take the lock. A holder whose renewals fail gives
// the hold up, with Err [ErrLockLost], a tenth of the TTL before its lease
// can end on the server. Stop the work guarded by a hold when its Done
// closes.
//
// A lease is not a fence: a holder paused for longer than its TTL (a GC
// pause, SIGSTOP, a VM migration) may still act after another has taken
// the lock. Mutex.Token, Election.Token and Permit.Token return a fencing
// token that only ever grows for a name: pass it to the resource you
// protect and have it reject writes that carry an older token;
// [FencedUpdateOne] does so for a MongoDB collection of your own.
//
// # Time and waiting
//
// Leases are written and judged in the server's time, measured with hello
// and counted on the local monotonic clock: a client whose wall clock is
// wrong or steps neither steals a live lock nor keeps a dead one. Waiters
// of one process queue by name, and only the first talks to the server;
// across processes a change stream tells them of releases, and a release
// names the next waiting process, so that each gets its turn
// ([WithFIFO] for strict first-come order). Where the server has no change
// streams, waiters poll, and still get their turns.
//
// # Calls and errors
//
// Calls that wait (Lock, Acquire, RLock, Campaign, Run, GetLock) block
// until they succeed, their context ends (they return ctx.Err()), the
// session ends, or the Locker closes ([ErrClosed]); Try calls make one
// attempt and return [ErrLocked] when another holds the lock. Errors are
// sentinels matched with errors.Is. Bad input (an empty or over-long name,
// a non-positive TTL, inconsistent options) is refused with a typed error
// before anything is sent.
//
// The repository's README and docs/ folder say which primitive suits which
// job, the guarantees and their limits, what changes on a replica set or
// sharded cluster, how the documents are stored, and the measured figures;
// its mongotest module is an embedded MongoDB-compatible server for tests.
package mongolock
