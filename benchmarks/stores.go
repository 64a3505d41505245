package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/mongotest"
)

// store is one lock implementation on its own real server.
type store interface {
	name() string
	// connect returns a new client, as a separate host would have: one
	// connection, one session (or lease), and its own count of round trips.
	connect(ctx context.Context) (client, error)
	close()
}

type client interface {
	ping(ctx context.Context) error
	mutex(name string) mutex
	roundTrips() int64 // requests sent so far
	close()
}

type mutex interface {
	lock(ctx context.Context) error
	unlock(ctx context.Context) error
}

// ---- mongolock on the embedded server (or MONGODB_URI) ----

type mongoStore struct {
	srv     *mongotest.Server
	uri     string
	coll    string
	poll    time.Duration
	streams bool // waiters woken by change streams; false: they poll
}

func startMongo(ctx context.Context, poll time.Duration, streams bool) (*mongoStore, error) {
	s := &mongoStore{uri: os.Getenv("MONGODB_URI"), coll: fmt.Sprint("peers_", time.Now().UnixNano()), poll: poll, streams: streams}
	if s.uri == "" {
		srv, err := mongotest.Start(ctx)
		if err != nil {
			return nil, err
		}
		s.srv, s.uri = srv, srv.URI()
	}
	return s, nil
}

func (s *mongoStore) name() string {
	where := "MONGODB_URI"
	if s.srv != nil {
		where = "mongotest"
	}
	if !s.streams {
		where += ", polling"
	}
	return "mongolock (" + where + ")"
}

func (s *mongoStore) close() {
	if s.srv != nil {
		s.srv.Close()
	}
}

type mongoClient struct {
	c    *mongo.Client
	l    *mongolock.Locker
	s    *mongolock.Session
	sent atomic.Int64
}

func (s *mongoStore) connect(ctx context.Context) (client, error) {
	mc := &mongoClient{}
	// A change stream's getMores are not counted: they are the long polls
	// that carry its events, as etcd's watch stream does without requests.
	mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName != "getMore" {
			mc.sent.Add(1)
		}
	}}
	c, err := mongo.Connect(options.Client().ApplyURI(s.uri).SetMonitor(mon).SetMaxPoolSize(4))
	if err != nil {
		return nil, err
	}
	mc.c = c
	if mc.l, err = mongolock.New(c.Database("mongolock_bench").Collection(s.coll), mongolock.WithPollInterval(s.poll),
		mongolock.WithChangeStreams(s.streams)); err != nil {
		return nil, err
	}
	if mc.s, err = mc.l.NewSession(ctx); err != nil {
		return nil, err
	}
	return mc, nil
}

func (c *mongoClient) ping(ctx context.Context) error {
	return c.c.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err()
}

func (c *mongoClient) mutex(name string) mutex { return mongoMutex{c.s.NewMutex(name)} }
func (c *mongoClient) roundTrips() int64       { return c.sent.Load() }
func (c *mongoClient) close() {
	c.s.Close()
	c.l.Close()
	c.c.Disconnect(context.Background())
}

type mongoMutex struct{ m *mongolock.Mutex }

func (m mongoMutex) lock(ctx context.Context) error { return m.m.Lock(ctx) }
func (m mongoMutex) unlock(context.Context) error   { return m.m.Unlock() }

// ---- etcd's concurrency.Mutex on an embedded etcd ----

type etcdStore struct {
	e   *embed.Etcd
	dir string
	url string
}

func freeURL() (*url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	return url.Parse("http://" + ln.Addr().String())
}

func startEtcd() (*etcdStore, error) {
	dir, err := os.MkdirTemp("", "bench-etcd-")
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cu, err := freeURL()
	if err != nil {
		return nil, err
	}
	pu, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		e.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("etcd did not start")
	}
	return &etcdStore{e: e, dir: dir, url: cu.String()}, nil
}

func (s *etcdStore) name() string { return "etcd concurrency.Mutex" }
func (s *etcdStore) close() {
	s.e.Close()
	os.RemoveAll(s.dir)
}

type etcdClient struct {
	c        *clientv3.Client
	sent     *atomic.Int64
	mu       sync.Mutex
	sessions []*concurrency.Session
}

func (s *etcdStore) connect(ctx context.Context) (client, error) {
	sent := &atomic.Int64{}
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		sent.Add(1)
		return inv(ctx, method, req, reply, cc, opts...)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.url},
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(count)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	return &etcdClient{c: c, sent: sent}, nil
}

func (c *etcdClient) ping(ctx context.Context) error {
	_, err := c.c.Get(ctx, "ping")
	return err
}

// mutex gives every mutex its own session (lease): two etcd Mutexes of one
// session on one name both believe they hold it (etcd issue #10756).
func (c *etcdClient) mutex(name string) mutex {
	sess, err := concurrency.NewSession(c.c, concurrency.WithTTL(20))
	if err != nil {
		return failedMutex{err}
	}
	c.mu.Lock()
	c.sessions = append(c.sessions, sess)
	c.mu.Unlock()
	return etcdMutex{concurrency.NewMutex(sess, "/locks/"+name)}
}
func (c *etcdClient) roundTrips() int64 { return c.sent.Load() }
func (c *etcdClient) close() {
	for _, s := range c.sessions {
		s.Close()
	}
	c.c.Close()
}

type etcdMutex struct{ m *concurrency.Mutex }

func (m etcdMutex) lock(ctx context.Context) error   { return m.m.Lock(ctx) }
func (m etcdMutex) unlock(ctx context.Context) error { return m.m.Unlock(ctx) }

type failedMutex struct{ err error }

func (m failedMutex) lock(context.Context) error   { return m.err }
func (m failedMutex) unlock(context.Context) error { return m.err }

// ---- bsm/redislock on redis-server ----

type redisStore struct {
	cmd  *exec.Cmd
	addr string
	poll time.Duration
}

func startRedis(ctx context.Context, poll time.Duration) (*redisStore, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found: run benchmarks/install-redis.sh (make bench-peers does)")
	}
	u, err := freeURL()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "--port", u.Port(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &redisStore{cmd: cmd, addr: u.Host, poll: poll}
	rc := redis.NewClient(&redis.Options{Addr: s.addr})
	defer rc.Close()
	for deadline := time.Now().Add(30 * time.Second); rc.Ping(ctx).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.close()
			return nil, fmt.Errorf("redis-server did not start")
		}
	}
	return s, nil
}

func (s *redisStore) name() string { return "bsm/redislock" }
func (s *redisStore) close() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

type redisClient struct {
	rc   *redis.Client
	l    *redislock.Client
	poll time.Duration
	sent *atomic.Int64
}

type countHook struct{ sent *atomic.Int64 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.sent.Add(1)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.sent.Add(1)
		return next(ctx, cmds)
	}
}

func (s *redisStore) connect(ctx context.Context) (client, error) {
	rc := redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: 4})
	sent := &atomic.Int64{}
	rc.AddHook(countHook{sent})
	return &redisClient{rc: rc, l: redislock.New(rc), poll: s.poll, sent: sent}, nil
}

func (c *redisClient) ping(ctx context.Context) error { return c.rc.Ping(ctx).Err() }
func (c *redisClient) mutex(name string) mutex        { return &redisMutex{c: c, key: "lock:" + name} }
func (c *redisClient) roundTrips() int64              { return c.sent.Load() }
func (c *redisClient) close()                         { c.rc.Close() }

type redisMutex struct {
	c    *redisClient
	key  string
	held *redislock.Lock
}

// lock retries with exponential backoff up to the same cap as mongolock's
// poll interval: redislock has no way to be told of a release.
func (m *redisMutex) lock(ctx context.Context) error {
	l, err := m.c.l.Obtain(ctx, m.key, 20*time.Second, &redislock.Options{
		RetryStrategy: redislock.ExponentialBackoff(time.Millisecond, m.c.poll),
	})
	if err != nil {
		return err
	}
	m.held = l
	return nil
}

func (m *redisMutex) unlock(ctx context.Context) error { return m.held.Release(ctx) }
