package csrapprover

import (
	"context"
	"errors"
	"fmt"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/provider"
	"github.com/pvelb/pvelb/provider/instances"
)

// Condition reasons pvelb writes on the requests it decides.
const (
	ReasonApproved = "PVELBKubeletServingApproved"
	ReasonDenied   = "PVELBKubeletServingDenied"
)

var labelsEverything = labels.Everything()

// Controller approves or denies pending kubelet serving requests.
type Controller struct {
	kube  kubernetes.Interface
	csrs  certlisters.CertificateSigningRequestLister
	nodes corelisters.NodeLister
	vms   *instances.Instances
	queue workqueue.TypedRateLimitingInterface[string]
}

// New builds the controller on the given informers; call Run after they
// are started.
func New(kube kubernetes.Interface, f informers.SharedInformerFactory, vms *instances.Instances) (*Controller, error) {
	csrInf := f.Certificates().V1().CertificateSigningRequests()
	c := &Controller{
		kube: kube, csrs: csrInf.Lister(), nodes: f.Core().V1().Nodes().Lister(), vms: vms,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pvelb-csr-approver"}),
	}
	add := func(obj any) {
		if csr, ok := obj.(*certv1.CertificateSigningRequest); ok && Pending(csr) {
			c.queue.Add(csr.Name)
		}
	}
	if _, err := csrInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj any) { add(obj) },
	}); err != nil {
		return nil, err
	}
	// A request waiting for its Node's initialisation is looked at again as
	// soon as the Node changes, not only after the backoff.
	if _, err := f.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			n, ok := obj.(*v1.Node)
			if !ok {
				return
			}
			csrs, _ := c.csrs.List(labelsEverything)
			for _, csr := range csrs {
				if Pending(csr) && csr.Spec.Username == nodeUserPrefix+n.Name {
					c.queue.Add(csr.Name)
				}
			}
		},
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run works the queue until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	go func() { <-ctx.Done(); c.queue.ShutDown() }()
	for {
		name, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.sync(ctx, name)
		switch {
		case err == nil:
			c.queue.Forget(name)
		case ctx.Err() != nil:
		default:
			klog.InfoS("Kubelet serving certificate request not approved yet; retrying", "csr", name, "reason", err.Error())
			c.queue.AddRateLimited(name)
		}
		c.queue.Done(name)
	}
}

// sync decides one request. An error means "retry later".
func (c *Controller) sync(ctx context.Context, name string) error {
	csr, err := c.csrs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !Pending(csr) {
		return nil
	}
	verdict := c.decide(ctx, csr)
	if IsRetry(verdict) {
		return verdict
	}
	cond := certv1.CertificateSigningRequestCondition{
		Status: v1.ConditionTrue, LastUpdateTime: metav1.Now(),
	}
	if verdict == nil {
		cond.Type, cond.Reason = certv1.CertificateApproved, ReasonApproved
		cond.Message = "pvelb: the request names only its Node's names and addresses, and the Node's Proxmox VM runs with the Node's SMBIOS UUID"
	} else {
		cond.Type, cond.Reason = certv1.CertificateDenied, ReasonDenied
		cond.Message = "pvelb: " + verdict.Error()
	}
	upd := csr.DeepCopy()
	upd.Status.Conditions = append(upd.Status.Conditions, cond)
	if _, err := c.kube.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing the decision: %w", err)
	}
	if verdict == nil {
		klog.InfoS("Approved kubelet serving certificate request", "csr", csr.Name, "user", csr.Spec.Username)
	} else {
		klog.InfoS("Denied kubelet serving certificate request", "csr", csr.Name, "user", csr.Spec.Username, "reason", verdict.Error())
	}
	return nil
}

// decide returns nil to approve, a Retry error to wait, another error to
// deny.
func (c *Controller) decide(ctx context.Context, csr *certv1.CertificateSigningRequest) error {
	r, err := ParseRequest(csr)
	if err != nil {
		return err
	}
	node, err := c.nodes.Get(r.NodeName)
	switch {
	case apierrors.IsNotFound(err):
		return Retry(fmt.Errorf("node %s does not exist (yet)", r.NodeName))
	case err != nil:
		return Retry(err)
	}
	if err := CheckNode(r, node); err != nil {
		return err
	}
	vm, err := c.vms.VMForNode(ctx, node)
	switch {
	case errors.Is(err, cloudprovider.InstanceNotFound):
		return fmt.Errorf("node %s: no Proxmox VM matches its providerID %s", node.Name, node.Spec.ProviderID)
	case err != nil:
		return Retry(fmt.Errorf("node %s: finding its Proxmox VM: %w", node.Name, err))
	}
	// The status is read now, not from the cached VM list: a certificate
	// outlives the cache by a year.
	status := "unknown"
	if cl := c.vms.Client(vm.Region); cl != nil {
		st, err := cl.VMStatus(ctx, vm.Ref())
		if err != nil {
			return Retry(fmt.Errorf("node %s: reading the status of VM %s: %w", node.Name, node.Spec.ProviderID, err))
		}
		status = st.Status
	}
	return CheckVM(node, VMFacts{
		ProviderID: node.Spec.ProviderID,
		Status:     status,
		UUID:       instances.ParseSMBIOS1(vm.Config.SMBIOS1).UUID,
	})
}

// Attach runs the approver in pvelb-ccm's elected leader when the cloud
// config turns it on (instances.approveKubeletServingCertificates).
func Attach(cloud *provider.Cloud) {
	if !cloud.Config().Instances.ApproveKubeletServingCertificates {
		return
	}
	cloud.RunInLeader(provider.LeaderController{
		Name: "pvelb-csr-approver",
		Informers: func(f informers.SharedInformerFactory) []cache.InformerSynced {
			return []cache.InformerSynced{
				f.Certificates().V1().CertificateSigningRequests().Informer().HasSynced,
				f.Core().V1().Nodes().Informer().HasSynced,
			}
		},
		Run: func(ctx context.Context, kube kubernetes.Interface, f informers.SharedInformerFactory) {
			c, err := New(kube, f, cloud.VMs())
			if err != nil {
				klog.ErrorS(err, "Kubelet serving certificate approver not running")
				return
			}
			klog.InfoS("Approving kubelet serving certificate requests of Nodes whose Proxmox VMs match")
			c.Run(ctx)
		},
	})
}
