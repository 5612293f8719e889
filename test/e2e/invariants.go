package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/provider/pve"
)

// invariantPoll is how often watchAddressInvariant lists Services: often
// enough to see a window of a few hundred milliseconds, cheap enough for the
// apiserver of a test.
const invariantPoll = 50 * time.Millisecond

// Violation is an address shown at once by Services that may not share it
// (by the rule written down in docs/loadbalancer.md, checked here from the
// Services' own specs, not from pvelb's code). One Violation covers every
// consecutive poll that saw the same Services show the address for the same
// reason.
type Violation struct {
	Address  string
	Services []string // "namespace/name", sorted
	Why      string
	// First and Last are the first and the last poll that saw it; Ended is
	// false when it still held at the last poll.
	First, Last time.Time
	Ended       bool
	// Unseen is the last poll before First that did not see it (zero when
	// unknown): a poll that failed (the apiserver down) hides when it began.
	Unseen time.Time
}

// Duration is how long the violation was seen (0 for a single poll).
func (v Violation) Duration() time.Duration { return v.Last.Sub(v.First) }

func (v Violation) String() string {
	state := "ended"
	if !v.Ended {
		state = "still there"
	}
	return fmt.Sprintf("%s shown by %s (%s) for %s from %s, %s",
		v.Address, strings.Join(v.Services, " and "), v.Why, v.Duration().Round(time.Millisecond), v.First.Format("15:04:05.000"), state)
}

// watchAddressInvariant lists Services every invariantPoll until stop is
// called and returns every violation of "an address is shown by two Services
// only if they may share it now". Only Services pvelb may serve are looked at
// (no class, or class pvelb.io/loadbalancer). A window right after a user's
// edit cannot be ruled out by any controller (the apiserver takes the edit
// before pvelb sees it), so the caller decides which violations fail its test;
// see longerThan.
func watchAddressInvariant(t testing.TB, kube kubernetes.Interface) (stop func() []Violation) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		open   = map[string]*Violation{} // by address, services and reason
		closed []Violation
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(invariantPoll)
		defer tick.Stop()
		for {
			list, err := kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
			now := time.Now()
			if err == nil {
				seen := map[string]bool{}
				for _, v := range addressViolations(list.Items) {
					id := v.Address + "|" + strings.Join(v.Services, ",") + "|" + v.Why
					seen[id] = true
					mu.Lock()
					if o := open[id]; o != nil {
						o.Last = now
					} else {
						v.First, v.Last = now, now
						open[id] = &v
					}
					mu.Unlock()
				}
				mu.Lock()
				for id, o := range open {
					if !seen[id] {
						o.Ended = true
						closed = append(closed, *o)
						delete(open, id)
					}
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	var out []Violation
	stop = func() []Violation {
		once.Do(func() {
			cancel()
			<-done
			mu.Lock()
			defer mu.Unlock()
			out = append(out, closed...)
			for _, id := range slices.Sorted(maps.Keys(open)) {
				out = append(out, *open[id])
			}
			slices.SortFunc(out, func(a, b Violation) int { return a.First.Compare(b.First) })
		})
		return out
	}
	t.Cleanup(func() { stop() })
	return stop
}

// longerThan returns the violations seen for longer than d, or still there
// when the watch stopped.
func longerThan(vs []Violation, d time.Duration) []Violation {
	var out []Violation
	for _, v := range vs {
		if v.Duration() > d || !v.Ended {
			out = append(out, v)
		}
	}
	return out
}

// pvelbMayServe: Services of another class are another implementation's.
func pvelbMayServe(s *corev1.Service) bool {
	return s.Spec.LoadBalancerClass == nil || *s.Spec.LoadBalancerClass == "pvelb.io/loadbalancer"
}

// addressViolations returns, for each address shown by several Services, the
// pairs that may not share it.
func addressViolations(svcs []corev1.Service) []Violation {
	byAddr := map[string][]*corev1.Service{}
	for i := range svcs {
		s := &svcs[i]
		if !pvelbMayServe(s) {
			continue
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				byAddr[in.IP] = append(byAddr[in.IP], s)
			}
		}
	}
	var out []Violation
	for _, addr := range slices.Sorted(maps.Keys(byAddr)) {
		list := byAddr[addr]
		slices.SortFunc(list, func(a, b *corev1.Service) int { return strings.Compare(svcKey(a), svcKey(b)) })
		for i := range list {
			for j := i + 1; j < len(list); j++ {
				if why := sharingRefused(list[i], list[j]); why != "" {
					out = append(out, Violation{Address: addr, Services: []string{svcKey(list[i]), svcKey(list[j])}, Why: why})
				}
			}
		}
	}
	return out
}

func svcKey(s *corev1.Service) string { return s.Namespace + "/" + s.Name }

// sharingRefused is docs/loadbalancer.md's sharing rule, written again here
// so that the check does not borrow the code it checks: both Services set
// the same pvelb.io/sharing-key, in one namespace, with the same
// externalTrafficPolicy (and for Local the same selector), and no (protocol,
// port) pair in common. It returns "" when they may share.
func sharingRefused(a, b *corev1.Service) string {
	ka, kb := strings.TrimSpace(a.Annotations["pvelb.io/sharing-key"]), strings.TrimSpace(b.Annotations["pvelb.io/sharing-key"])
	etp := func(s *corev1.Service) corev1.ServiceExternalTrafficPolicy {
		if s.Spec.ExternalTrafficPolicy == "" {
			return corev1.ServiceExternalTrafficPolicyCluster
		}
		return s.Spec.ExternalTrafficPolicy
	}
	switch {
	case ka == "" || kb == "":
		return "no sharing key"
	case ka != kb:
		return "sharing keys differ"
	case a.Namespace != b.Namespace:
		return "namespaces differ"
	case etp(a) != etp(b):
		return "externalTrafficPolicy differs"
	case etp(a) == corev1.ServiceExternalTrafficPolicyLocal && !maps.Equal(a.Spec.Selector, b.Spec.Selector):
		return "Local with different selectors"
	}
	for _, p := range a.Spec.Ports {
		for _, q := range b.Spec.Ports {
			pp, qp := p.Protocol, q.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if qp == "" {
				qp = corev1.ProtocolTCP
			}
			if pp == qp && p.Port == q.Port {
				return fmt.Sprintf("ports clash (%s/%d)", pp, p.Port)
			}
		}
	}
	return ""
}

// heldAsShown checks that pvelb holds exactly what the Services show, as the
// cluster IPSet tells: one pvelb entry per shown address, whose comment names
// the Services showing it, and no other pvelb entry. It is the second half of
// the invariant ("an address a Service shows is one pvelb holds for it"),
// for a moment when pvelb had time to write Proxmox.
func heldAsShown(svcs []corev1.Service, entries []pve.IPSetEntry) error {
	shown := map[string][]string{}
	for i := range svcs {
		s := &svcs[i]
		if !pvelbMayServe(s) {
			continue
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			shown[in.IP] = append(shown[in.IP], svcKey(s))
		}
	}
	held := map[string]string{}
	for _, e := range entries {
		if body, ok := strings.CutPrefix(e.Comment, "pvelb: "); ok {
			held[strings.TrimSuffix(strings.TrimSuffix(e.CIDR, "/32"), "/128")] = body
		}
	}
	var problems []string
	for ip, who := range shown {
		slices.Sort(who)
		if got, want := held[ip], strings.Join(who, ","); got != want {
			problems = append(problems, fmt.Sprintf("%s shown by %s, held for %q", ip, want, got))
		}
	}
	for ip, who := range held {
		if _, ok := shown[ip]; !ok {
			problems = append(problems, fmt.Sprintf("%s held for %q, shown by nobody", ip, who))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}
