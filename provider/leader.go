package provider

import (
	"context"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"
)

// sharedInformerWait is how long a leader controller waits for the
// controller manager's shared informers before it keeps its own.
const sharedInformerWait = 30 * time.Second

// LeaderController is a small controller of pvelb-ccm's elected leader.
type LeaderController struct {
	// Name is its Kubernetes client's name, and names it in logs.
	Name string
	// Informers registers the informers it needs in f (before the factory
	// starts) and returns their HasSynced.
	Informers func(f informers.SharedInformerFactory) []cache.InformerSynced
	// Run runs it once the informers synced, until ctx ends.
	Run func(ctx context.Context, kube kubernetes.Interface, f informers.SharedInformerFactory)
}

// RunInLeader runs lc in the elected leader (Initialize), on the controller
// manager's shared informers (SetInformers), so pvelb-ccm keeps one copy of
// each object; on its own informers if none arrive within 30s.
func (c *Cloud) RunInLeader(lc LeaderController) {
	shared := make(chan informers.SharedInformerFactory, 1)
	c.OnSetInformers(func(f informers.SharedInformerFactory) {
		lc.Informers(f)
		shared <- f
	})
	c.OnInitialize(func(cb cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-stop; cancel() }()
		kube, err := cb.Client(lc.Name)
		if err != nil {
			klog.ErrorS(err, "No Kubernetes client; controller not running", "controller", lc.Name)
			return
		}
		go func() {
			var f informers.SharedInformerFactory
			own := false
			select {
			case f = <-shared:
			case <-time.After(sharedInformerWait):
				f, own = informers.NewSharedInformerFactory(kube, 0), true
			case <-ctx.Done():
				return
			}
			synced := lc.Informers(f)
			if own {
				f.Start(ctx.Done())
			}
			if !cache.WaitForCacheSync(ctx.Done(), synced...) {
				return
			}
			lc.Run(ctx, kube, f)
		}()
	})
}
