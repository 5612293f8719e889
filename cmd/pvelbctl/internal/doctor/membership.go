package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The announcers elect answerers only among nodes they hear (UDP heartbeats
// on the membership port): a pair that does not hear each other may both
// answer for a VIP, or leave it unanswered. Each announcer reports whom it
// hears on its /status endpoint; doctor reads them all and names the pairs.

// announcerView is the part of an announcer's /status doctor reads
// (announcer.Status: membership.View).
type announcerView struct {
	Interfaces    map[string]string `json:"interfaces"`
	ForeignClaims []ForeignClaim    `json:"foreignClaims"`
	Membership    struct {
		Node  string `json:"node"`
		Peers []struct {
			Name    string `json:"name"`
			Heard   bool   `json:"heard"`
			HearsUs bool   `json:"hearsUs"`
		} `json:"peers"`
	} `json:"membership"`
}

// AnnouncerStatus is one node's announcer status, or why it could not be
// read.
type AnnouncerStatus struct {
	Node string
	// Hears is the set of peers whose heartbeats this announcer receives.
	Hears map[string]bool
	// Sessions are its BGP sessions (BGP-mode pools only), from /metrics.
	Sessions []BGPSession
	// MACs are the MACs of the interfaces it answers on.
	MACs []string
	// Claims are other MACs' recent claims on VIPs it answers.
	Claims []ForeignClaim
	Err    error
}

// ForeignClaim is another MAC's claim on a VIP an announcer answers.
type ForeignClaim struct {
	IP        string    `json:"ip"`
	MAC       string    `json:"mac"`
	Interface string    `json:"interface"`
	Count     int       `json:"count"`
	Last      time.Time `json:"last"`
}

// BGPSession is one announcer's session to a BGPPeer.
type BGPSession struct {
	Peer, Address string
	Up            bool
}

// FetchStatus reads one node's announcer status.
type FetchStatus func(ctx context.Context, node corev1.Node) AnnouncerStatus

// HTTPStatus fetches http://<node InternalIP>:port/status with dial (nil:
// the default dialer): the announcers run on the host network, so this
// needs a machine on the node network.
func HTTPStatus(port int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) FetchStatus {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: dial}}
	return func(ctx context.Context, n corev1.Node) AnnouncerStatus {
		st := AnnouncerStatus{Node: n.Name}
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
				break
			}
		}
		if ip == "" {
			st.Err = fmt.Errorf("node has no InternalIP")
			return st
		}
		url := "http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/status"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			st.Err = err
			return st
		}
		resp, err := hc.Do(req)
		if err != nil {
			st.Err = err
			return st
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			st.Err = fmt.Errorf("GET %s: %s", url, resp.Status)
			return st
		}
		var v announcerView
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&v); err != nil {
			st.Err = fmt.Errorf("GET %s: %v", url, err)
			return st
		}
		for _, mac := range v.Interfaces {
			st.MACs = append(st.MACs, strings.ToLower(mac))
		}
		st.Claims = v.ForeignClaims
		st.Hears = map[string]bool{}
		for _, p := range v.Membership.Peers {
			if p.Heard {
				st.Hears[p.Name] = true
			}
		}
		// BGP sessions are exported as metrics only.
		murl := "http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/metrics"
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, murl, nil); err == nil {
			if resp, err := hc.Do(req); err == nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
				_ = resp.Body.Close()
				st.Sessions = ParseBGPSessions(string(b))
			}
		}
		return st
	}
}

var sessionUpRE = regexp.MustCompile(`^pvelb_announcer_bgp_session_up\{([^}]*)\}\s+(\S+)`)
var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// ParseBGPSessions reads pvelb_announcer_bgp_session_up from an announcer's
// Prometheus text exposition.
func ParseBGPSessions(metrics string) []BGPSession {
	var out []BGPSession
	for _, line := range strings.Split(metrics, "\n") {
		m := sessionUpRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := BGPSession{Up: m[2] == "1"}
		for _, l := range labelRE.FindAllStringSubmatch(m[1], -1) {
			switch l[1] {
			case "peer":
				s.Peer = l[2]
			case "address":
				s.Address = l[2]
			}
		}
		out = append(out, s)
	}
	return out
}

// BGPArea groups the BGP session findings.
const BGPArea = "bgp sessions"

// AssessBGP names every announcer's BGP session that is not established.
func AssessBGP(sts []AnnouncerStatus) []Finding {
	var out []Finding
	up := 0
	for _, s := range sts {
		for _, b := range s.Sessions {
			if b.Up {
				up++
				continue
			}
			out = append(out, Finding{Severity: Fail, Area: BGPArea,
				Message: fmt.Sprintf("%s: session to BGPPeer %s (%s) is not established: the router gets no routes from this node", s.Node, b.Peer, b.Address),
				Fix:     fmt.Sprintf("check the BGPPeer's peerAddress, ASNs and password against the router's neighbor for the node, and that TCP 179 passes from %s to %s (Proxmox VM and datacenter firewalls); the announcer log says why the session closes", s.Node, b.Address)})
		}
	}
	if len(out) == 0 && up > 0 {
		out = append(out, Finding{Severity: OK, Area: BGPArea, Message: fmt.Sprintf("%d BGP session(s) established", up)})
	}
	return out
}

// CheckMembership reads every Node's announcer status with fetch and adds
// the findings of AssessMembership. membershipPort names the port in fixes.
func CheckMembership(ctx context.Context, nodes []corev1.Node, fetch FetchStatus, membershipPort int, r *Report) {
	sts := make([]AnnouncerStatus, 0, len(nodes))
	for _, n := range nodes {
		sts = append(sts, fetch(ctx, n))
	}
	r.Findings = append(r.Findings, AssessMembership(sts, membershipPort)...)
	r.Findings = append(r.Findings, AssessBGP(sts)...)
	r.Findings = append(r.Findings, AssessForeignClaims(sts, time.Now())...)
}

// MembershipArea groups the membership findings.
const MembershipArea = "announcers"

// AssessMembership names the announcers whose status could not be read and
// every pair of nodes that does not hear each other, one way or both.
func AssessMembership(sts []AnnouncerStatus, membershipPort int) []Finding {
	var out []Finding
	add := func(sev Severity, fix, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Area: MembershipArea, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	var read []AnnouncerStatus
	for _, s := range sts {
		if s.Err != nil {
			add(Warn, "check the announcer runs on the node (kubectl -n pvelb-system get pods -o wide) and that this machine reaches the node's metrics port",
				"%s: announcer status not readable: %v", s.Node, s.Err)
			continue
		}
		read = append(read, s)
	}
	slices.SortFunc(read, func(a, b AnnouncerStatus) int { return strings.Compare(a.Node, b.Node) })
	fix := func(from, to string) string {
		return fmt.Sprintf("let UDP port %d pass from %s to %s: the Proxmox VM and datacenter firewalls (an IN ACCEPT rule for udp dport %d between the node VMs), host firewalls, the switch", membershipPort, from, to, membershipPort)
	}
	bad := 0
	for i, a := range read {
		for _, b := range read[i+1:] {
			aHearsB, bHearsA := a.Hears[b.Node], b.Hears[a.Node]
			switch {
			case aHearsB && bHearsA:
				continue
			case !aHearsB && !bHearsA:
				add(Fail, fix(a.Node, b.Node)+" and back",
					"%s and %s do not hear each other's heartbeats: each may answer for the same VIP", a.Node, b.Node)
			case !aHearsB:
				add(Fail, fix(b.Node, a.Node),
					"%s does not hear %s (%s hears %s): heartbeats from %s are lost on the way", a.Node, b.Node, b.Node, a.Node, b.Node)
			default:
				add(Fail, fix(a.Node, b.Node),
					"%s does not hear %s (%s hears %s): heartbeats from %s are lost on the way", b.Node, a.Node, a.Node, b.Node, a.Node)
			}
			bad++
		}
	}
	if bad == 0 && len(read) > 1 {
		add(OK, "", "%d announcers all hear each other", len(read))
	}
	return out
}

// ForeignArea groups the foreign responder findings.
const ForeignArea = "vip responders"

// AssessForeignClaims names the MACs that are no announcer's and claimed a
// VIP an announcer answers: another responder for that VIP. Claims by
// announcers' own MACs are handovers and pass. While some announcer's status
// could not be read, an unknown MAC may be that node's: a warning then.
func AssessForeignClaims(sts []AnnouncerStatus, now time.Time) []Finding {
	ours := map[string]bool{}
	read, unread := 0, 0
	for _, s := range sts {
		if s.Err != nil {
			unread++
			continue
		}
		read++
		for _, m := range s.MACs {
			ours[strings.ToLower(m)] = true
		}
	}
	var out []Finding
	for _, s := range sts {
		for _, c := range s.Claims {
			if ours[strings.ToLower(c.MAC)] {
				continue
			}
			sev := Fail
			if unread > 0 {
				sev = Warn
			}
			out = append(out, Finding{Severity: sev, Area: ForeignArea,
				Message: fmt.Sprintf("VIP %s is claimed by MAC %s, which is no announcer's: seen %d time(s) by %s on %s, last %s ago; clients may follow it",
					c.IP, c.MAC, c.Count, s.Node, c.Interface, now.Sub(c.Last).Round(time.Second)),
				Fix: fmt.Sprintf("find the host with MAC %s (ip neigh on a client, the switch's MAC table, grep -ril '%s' /etc/pve/nodes/*/qemu-server/ on Proxmox) and remove the address there, or the other load balancer's pool or L2 policy that selects it",
					c.MAC, strings.ToUpper(c.MAC))})
		}
	}
	if len(out) == 0 && read > 0 {
		out = append(out, Finding{Severity: OK, Area: ForeignArea, Message: "no other responder claimed a VIP the announcers answer (last 10 minutes)"})
	}
	return out
}
