package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GoneMember joins group, consuming topic, as the static member instance,
// waits for its assignment and closes it without leaving the group (a
// static member's client does not leave on Close). The coordinator keeps it
// until its session timeout (timeout, also its rebalance timeout): a member
// that joins meanwhile waits in the rebalance for it to rejoin.
func GoneMember(t testing.TB, brokers []string, group, topic, instance string, timeout time.Duration) {
	t.Helper()
	assigned := make(chan struct{}, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.InstanceID(instance), kgo.SessionTimeout(timeout), kgo.RebalanceTimeout(timeout),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			select {
			case assigned <- struct{}{}:
			default:
			}
		}))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	polled := make(chan struct{})
	go func() { defer close(polled); cl.PollRecords(ctx, 1) }()
	select {
	case <-assigned:
	case <-ctx.Done():
		cl.Close()
		<-polled
		t.Fatalf("member %q of group %q was never assigned its partitions", instance, group)
	}
	cl.Close() // static: no LeaveGroup
	<-polled
}

// GroupMembers is group's members, each by its instance id if it has one,
// else by its member id, and the group's state.
func GroupMembers(t testing.TB, brokers []string, group string) (members []string, state string) {
	t.Helper()
	adm := admin(t, brokers)
	members, state, err := describe(adm, group)
	require.NoError(t, err)
	return members, state
}

// AwaitRebalancing waits until group is preparing a rebalance: a member's
// join waits for the others.
func AwaitRebalancing(t testing.TB, brokers []string, group string, timeout time.Duration) {
	t.Helper()
	adm := admin(t, brokers)
	WaitFor(t, timeout, "group "+group+" to rebalance", func() bool {
		_, state, err := describe(adm, group)
		return err == nil && state == "PreparingRebalance"
	})
}

// admin is an admin client closed when the test ends.
func admin(t testing.TB, brokers []string) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func describe(adm *kadm.Client, group string) (members []string, state string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, "", err
	}
	g := gs[group]
	if g.Err != nil {
		return nil, "", g.Err
	}
	for _, m := range g.Members {
		id := m.MemberID
		if m.InstanceID != nil {
			id = *m.InstanceID
		}
		members = append(members, id)
	}
	return members, g.State, nil
}
