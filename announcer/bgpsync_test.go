package announcer

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// A unit test of the password lookup alone (the fake clientset only serves
// Gets here); the real apiserver and RBAC are exercised in test/e2e.
func TestBGPPassword(t *testing.T) {
	const secretValue = "s3cr3t-md5-value"
	sec := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "pvelb-system", Name: DefaultBGPPasswordSecret},
		Data: map[string][]byte{"password": []byte(secretValue), "other": []byte("x"), "empty": nil}}
	kube := fake.NewClientset(sec)
	kube.PrependReactor("get", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() != "pvelb-system" || a.(k8stesting.GetAction).GetName() != DefaultBGPPasswordSecret {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, a.(k8stesting.GetAction).GetName(), nil)
		}
		return false, nil, nil
	})
	c := &Controller{cfg: Config{Kube: kube}, bgp: &bgpState{cfg: BGPConfig{}, passwords: map[string]cachedPassword{}}}
	peer := func(ns, name, key string) *v1alpha1.BGPPeer {
		p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}}
		if name != "" {
			p.Spec.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: ns, Name: name, Key: key}
		}
		return p
	}
	ctx := context.Background()
	for _, tt := range []struct {
		name, ns, secret, key string
		want                  string
		errHas                []string
	}{
		{name: "no password", want: ""},
		{name: "default key", ns: "pvelb-system", secret: DefaultBGPPasswordSecret, want: secretValue},
		{name: "named key", ns: "pvelb-system", secret: DefaultBGPPasswordSecret, key: "other", want: "x"},
		{name: "missing key", ns: "pvelb-system", secret: DefaultBGPPasswordSecret, key: "nope", errHas: []string{"BGPPeer tor: spec.passwordSecretRef", `no key "nope"`}},
		{name: "empty key", ns: "pvelb-system", secret: DefaultBGPPasswordSecret, key: "empty", errHas: []string{"spec.passwordSecretRef", "empty"}},
		{name: "not allowed by RBAC", ns: "default", secret: "mine", errHas: []string{"spec.passwordSecretRef", "default/mine", "Role pvelb-announcer:bgp-passwords"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.bgpPassword(ctx, peer(tt.ns, tt.secret, tt.key))
			if len(tt.errHas) > 0 {
				if err == nil {
					t.Fatalf("want an error, got password of %d bytes", len(got))
				}
				for _, s := range tt.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				if strings.Contains(err.Error(), secretValue) {
					t.Errorf("error reveals the password: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	// The last good password survives a failed refresh (TTL 0: always refresh).
	if err := kube.CoreV1().Secrets("pvelb-system").Delete(ctx, DefaultBGPPasswordSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.bgpPassword(ctx, peer("pvelb-system", DefaultBGPPasswordSecret, "")); err != nil || got != secretValue {
		t.Fatalf("after the Secret vanished: %q, %v; want the cached password", got, err)
	}
	// A password never read before has no fallback.
	if _, err := c.bgpPassword(ctx, peer("pvelb-system", DefaultBGPPasswordSecret, "fresh")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("want not found, got %v", err)
	}
}
