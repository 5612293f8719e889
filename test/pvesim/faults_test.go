package pvesim

import (
	"testing"
)

func TestOutageAndFaults(t *testing.T) {
	ts, c := newSim(t, Options{})
	ts.SetOutage(true)
	c.do("GET", "/version", nil).want(t, "503 Service Unavailable")
	ts.SetOutage(false)
	c.do("GET", "/version", nil).want(t, "200 OK")

	ts.InjectFault(Fault{Method: "POST", PathPrefix: "/cluster/firewall/ipset", Status: 500, Reason: "no quorum!", Count: 2})
	ts.InjectFault(Fault{PathPrefix: "/nodes/pve1/", Status: 596, Reason: "Connection timed out", Count: 1})
	cases := []struct{ method, path, status string }{
		{"POST", "/cluster/firewall/ipset", "500 no quorum!"},
		{"GET", "/cluster/firewall/ipset", "200 OK"}, // other method
		{"POST", "/cluster/firewall/ipset", "500 no quorum!"},
		{"POST", "/cluster/firewall/ipset", "200 OK"}, // count used up
		{"GET", "/nodes/pve1/qemu/100/config", "596 Connection timed out"},
		{"GET", "/nodes/pve1/qemu/100/config", "200 OK"},
	}
	for i, tc := range cases {
		var params map[string][]string
		if tc.method == "POST" {
			params = vals("name", "vips")
		}
		r := c.do(tc.method, tc.path, params)
		if r.Status != tc.status {
			t.Fatalf("step %d %s %s: %q, want %q", i, tc.method, tc.path, r.Status, tc.status)
		}
	}
	ts.InjectFault(Fault{Status: 502})
	c.do("GET", "/version", nil).want(t, "502 Bad Gateway")
	ts.ClearFaults()
	c.do("GET", "/version", nil).want(t, "200 OK")
}

func TestStats(t *testing.T) {
	ts, c := newSim(t, Options{})
	ts.ResetStats()
	c.do("GET", "/cluster/firewall/ipset", nil)
	c.do("POST", "/cluster/firewall/ipset", vals("name", "a1"))
	c.do("POST", "/cluster/firewall/ipset", vals("name", "a2"))
	c.do("GET", "/nodes/pve1/qemu/100/config", nil)
	st := ts.Stats()
	if st.Requests != 4 || st.Writes != 2 || st.ByPath["POST /cluster/firewall/ipset"] != 2 ||
		st.ByPath["GET /nodes/{node}/qemu/{vmid}/config"] != 1 {
		t.Fatalf("stats %+v", st)
	}
	ts.ResetStats()
	if st := ts.Stats(); st.Requests != 0 || len(st.ByPath) != 0 {
		t.Fatalf("after reset %+v", st)
	}
}
