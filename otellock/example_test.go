package otellock_test

import (
	"context"
	"fmt"
	"os"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/otellock"
)

// A Locker whose holds show in OpenTelemetry metrics.
func ExampleObserver() {
	mp := sdkmetric.NewMeterProvider() // with your exporter's reader
	defer mp.Shutdown(context.Background())
	obs, err := otellock.Observer(mp.Meter("mongolock"))
	if err != nil {
		fmt.Println(err)
		return
	}
	client, _ := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	defer client.Disconnect(context.Background())
	locker, err := mongolock.New(client.Database("mongolock_example").Collection("otel"), mongolock.WithObserver(obs))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer locker.Close()
	fmt.Println("observed")
	// Output: observed
}
