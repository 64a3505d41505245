package mongotest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Server is an embedded FerretDB behind a serialising proxy. Its methods
// are safe for concurrent use.
type Server struct {
	opts    options
	dataDir string
	tmpDir  string // removed on Close; empty when the caller chose the folder
	proxy   *proxy

	mu      sync.Mutex
	backend string             // FerretDB's own address, reached only through the proxy
	stop    context.CancelFunc // stops the running FerretDB
	stopped chan struct{}      // closed when that FerretDB has returned
}

// Option configures Start.
type Option func(*options)

type options struct {
	addr          string
	dataDir       string
	logger        *slog.Logger
	changeStreams bool
	oplogDocs     int64
	standalone    bool
}

// WithChangeStreams turns the change streams mongotest serves on FerretDB's
// oplog on (the default) or off. Off, an aggregate with $changeStream fails
// as FerretDB makes it fail (NotImplemented), as on a standalone server:
// that keeps clients' fallback without change streams tested.
func WithChangeStreams(on bool) Option { return func(o *options) { o.changeStreams = on } }

// WithElectionID makes hello report an electionId and a topologyVersion,
// as a replica set's primary does (on, the default), or neither, as a
// standalone server: clients then have no election to stamp leases with,
// and drivers monitor the server by polling it.
func WithElectionID(on bool) Option { return func(o *options) { o.standalone = !on } }

// WithOplogSize sets how many oplog entries mongotest keeps for change
// streams (default 20,000); a stream that falls further behind, or resumes
// from a token older than that, fails with ChangeStreamHistoryLost (286).
func WithOplogSize(entries int64) Option { return func(o *options) { o.oplogDocs = entries } }

// WithAddr sets the address the server listens on. The default is
// "127.0.0.1:0", a free port on the loopback interface.
func WithAddr(addr string) Option { return func(o *options) { o.addr = addr } }

// WithDataDir keeps the server's data in dir, which is created if needed and
// left in place by Close, so that a later Start on the same folder sees the
// same data. The default is a temporary folder removed by Close.
func WithDataDir(dir string) Option { return func(o *options) { o.dataDir = dir } }

// WithLogger sends FerretDB's log to l. The default discards it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Start starts FerretDB with its SQLite backend and the proxy in front of it,
// and returns once the server answers. On failure nothing is left running.
func Start(ctx context.Context, opts ...Option) (*Server, error) {
	o := options{addr: "127.0.0.1:0", logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		changeStreams: true, oplogDocs: defaultOplogDocs}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{opts: o, dataDir: o.dataDir}
	if s.dataDir == "" {
		dir, err := os.MkdirTemp("", "mongotest-")
		if err != nil {
			return nil, fmt.Errorf("mongotest: %w", err)
		}
		s.dataDir, s.tmpDir = dir, dir
	} else if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("mongotest: %w", err)
	}
	if err := s.startBackend(ctx); err != nil {
		s.removeTmp()
		return nil, err
	}
	p, err := newProxy(o.addr, s.backendAddr)
	if err != nil {
		s.stopBackend()
		s.removeTmp()
		return nil, err
	}
	if o.changeStreams {
		p.streams = newStreams(s.backendAddr, s.dataDir, &p.serial, o.oplogDocs, p.done)
		p.streams.faults = &p.faults
		p.streams.tail.clockOffset = p.member.offset
	}
	p.member.standalone = o.standalone
	s.proxy = p
	return s, nil
}

// URI returns the connection string of the server, through the proxy.
func (s *Server) URI() string {
	return "mongodb://" + s.proxy.addr() + "/?directConnection=true"
}

// ChangeStreams returns how many change-stream cursors are open (not yet
// exhausted, invalidated or killed).
func (s *Server) ChangeStreams() int {
	if s.proxy.streams == nil {
		return 0
	}
	s.proxy.streams.mu.Lock()
	defer s.proxy.streams.mu.Unlock()
	return len(s.proxy.streams.cursors)
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.proxy.addr() }

// DataDir returns the folder that holds the server's data.
func (s *Server) DataDir() string { return s.dataDir }

// Close stops the proxy and the server, and removes the data folder unless
// it was given with WithDataDir.
func (s *Server) Close() error {
	s.proxy.close()
	s.stopBackend()
	return s.removeTmp()
}

// Restart stops the server and starts it again on the same data folder and
// the same address. Open connections are dropped, as by a server restart;
// clients reconnect on their next command.
func (s *Server) Restart(ctx context.Context) error {
	s.proxy.dropAll()
	s.stopBackend()
	s.proxy.member.restarted()
	return s.startBackend(ctx)
}

// Cut drops every open connection when on, and refuses new ones until it is
// called again with false: to clients the server is unreachable.
func (s *Server) Cut(on bool) { s.proxy.setCut(on) }

// Delay holds every reply for d before it reaches the client; 0 turns the
// delay off.
func (s *Server) Delay(d time.Duration) { s.proxy.setDelay(d) }

// DirectURI returns a URI of FerretDB itself, behind no proxy: for
// measurements of what the proxy costs only. There conditional updates are
// not atomic, and there are no change streams.
func (s *Server) DirectURI() string { return "mongodb://" + s.backendAddr() + "/" }

func (s *Server) backendAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backend
}

func (s *Server) startBackend(ctx context.Context) error {
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + filepath.ToSlash(s.dataDir) + "/?" + sqliteSync,
		Logger:    s.opts.logger,
	})
	if err != nil {
		return fmt.Errorf("mongotest: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = f.Run(runCtx)
	}()
	// MongoDBURI blocks until the listener is up.
	addr := strings.TrimSuffix(strings.TrimPrefix(f.MongoDBURI(), "mongodb://"), "/")
	if err := waitListening(ctx, addr); err != nil {
		cancel()
		<-stopped
		return err
	}
	if s.opts.changeStreams {
		if err := ensureOplog(ctx, addr); err != nil {
			cancel()
			<-stopped
			return err
		}
	}
	s.mu.Lock()
	s.backend, s.stop, s.stopped = addr, cancel, stopped
	s.mu.Unlock()
	return nil
}

func (s *Server) stopBackend() {
	s.mu.Lock()
	stop, stopped := s.stop, s.stopped
	s.stop, s.stopped = nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
}

func (s *Server) removeTmp() error {
	if s.tmpDir == "" {
		return nil
	}
	return os.RemoveAll(s.tmpDir)
}

func waitListening(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mongotest: server did not start: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
