// Package mongotest runs an embedded MongoDB-compatible server for tests and
// demos: FerretDB with its SQLite backend, behind a proxy that forwards one
// wire-protocol command at a time so that single-document updates are atomic,
// as they are on MongoDB.
//
// FerretDB 1.x executes update, findAndModify and delete as a query followed
// by a write; two clients racing a conditional update can both succeed. The
// proxy serialises every command across all connections, which restores the
// single-document atomicity a lock needs. The proxy also has fault switches
// for failure tests: cut connections, delay replies, restart the server,
// and behave like a replica set under stress (FailWrites,
// FailWriteConcern, Failover, DelayEvents, RefuseChangeStreams; also over
// the wire, as the command {mongotest: "<switch>", ...}). See README.md.
package mongotest
