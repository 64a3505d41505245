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
		go b.client.Disconnect(context.Background())
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

// close disconnects the client, within a second.
func (b *backendClient) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b.client.Disconnect(ctx)
		b.client = nil
	}
}
