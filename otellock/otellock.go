// Package otellock turns a mongolock.Observer's news into OpenTelemetry
// metrics. It is a module of its own, so that OpenTelemetry never enters
// mongolock's go.mod.
//
// Instruments (attributes: mongolock.kind, mongolock.name):
//
//	mongolock.acquisitions    counter        holds taken
//	mongolock.losses          counter        holds lost (lease, admin, cap)
//	mongolock.wait.duration   histogram (s)  from the call to the hold
//	mongolock.hold.duration   histogram (s)  from the hold to its release or loss
//	mongolock.renewal.duration histogram (s) keepalive round trips (attribute error: true on failure)
//	mongolock.leaderships     up-down counter leaderships held by this process
//	mongolock.change_stream   up-down counter 1 while the change stream runs
package otellock

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/mongolock/mongolock"
)

// Observer returns a mongolock.Observer that records on meter's
// instruments; pass it to mongolock.WithObserver. It returns an error
// when an instrument cannot be made.
func Observer(meter metric.Meter) (mongolock.Observer, error) {
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	acq, err := meter.Int64Counter("mongolock.acquisitions", metric.WithDescription("Holds taken"))
	must(err)
	losses, err := meter.Int64Counter("mongolock.losses", metric.WithDescription("Holds lost: lease, admin release or cap"))
	must(err)
	wait, err := meter.Float64Histogram("mongolock.wait.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from the call to the hold"))
	must(err)
	held, err := meter.Float64Histogram("mongolock.hold.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from the hold to its release or loss"))
	must(err)
	renewal, err := meter.Float64Histogram("mongolock.renewal.duration", metric.WithUnit("s"),
		metric.WithDescription("Round trip of a keepalive renewal"))
	must(err)
	leaders, err := meter.Int64UpDownCounter("mongolock.leaderships", metric.WithDescription("Leaderships held by this process"))
	must(err)
	stream, err := meter.Int64UpDownCounter("mongolock.change_stream", metric.WithDescription("1 while the change stream runs"))
	must(err)
	if err := errors.Join(errs...); err != nil {
		return mongolock.Observer{}, err
	}
	ctx := context.Background()
	attrs := func(ev mongolock.Event) metric.MeasurementOption {
		return metric.WithAttributes(attribute.String("mongolock.kind", ev.Kind), attribute.String("mongolock.name", ev.Name))
	}
	ended := func(ev mongolock.Event) {
		held.Record(ctx, ev.Held.Seconds(), attrs(ev))
		if ev.Kind == "election" {
			leaders.Add(ctx, -1, attrs(ev))
		}
	}
	return mongolock.Observer{
		Acquired: func(ev mongolock.Event) {
			acq.Add(ctx, 1, attrs(ev))
			wait.Record(ctx, ev.Waited.Seconds(), attrs(ev))
			if ev.Kind == "election" {
				leaders.Add(ctx, 1, attrs(ev))
			}
		},
		Released: ended,
		Lost: func(ev mongolock.Event) {
			losses.Add(ctx, 1, attrs(ev))
			ended(ev)
		},
		Renewed: func(_ int, rtt time.Duration, err error) {
			renewal.Record(ctx, rtt.Seconds(), metric.WithAttributes(attribute.Bool("error", err != nil)))
		},
		ChangeStream: func(on bool) {
			if on {
				stream.Add(ctx, 1)
			} else {
				stream.Add(ctx, -1)
			}
		},
	}, nil
}
