package mongotest

import (
	"context"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// backendClient is a client connected to FerretDB directly, past the
// proxy, reconnected when Restart moves FerretDB to a new address.
type backendClient struct {
	addr func() string // FerretDB's current address

	mu     sync.Mutex
	client *mongo.Client
	at     string // the address client is connected to
	// leaving counts the Disconnects of clients of former addresses,
	// which close waits for.
	leaving sync.WaitGroup
}

// get returns a client of the current backend.
func (b *backendClient) get() (*mongo.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	addr := b.addr()
	if b.client != nil && b.at == addr {
		return b.client, nil
	}
	if b.client != nil {
		old := b.client
		b.leaving.Go(func() { disconnect(old) })
		b.client = nil
	}
	c, err := mongo.Connect(mopt.Client().ApplyURI("mongodb://" + addr + "/?directConnection=true").
		SetTimeout(10 * time.Second))
	if err != nil {
		return nil, err
	}
	b.client, b.at = c, addr
	return c, nil
}

// close disconnects the client, and waits for the clients of former
// addresses to be disconnected: within a second each.
func (b *backendClient) close() {
	b.mu.Lock()
	if b.client != nil {
		disconnect(b.client)
		b.client = nil
	}
	b.mu.Unlock()
	b.leaving.Wait()
}

// disconnect disconnects c within a second: a server that is gone cannot
// hold it longer.
func disconnect(c *mongo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Disconnect(ctx)
}
